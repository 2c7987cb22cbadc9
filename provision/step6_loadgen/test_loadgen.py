"""Step 6 checks on load generator hosts: the machine's Locust, a user of its own, a private run folder, no listener."""

from provision.step6_loadgen.recipes import LOCUST_BIN, LOCUST_USER, RUN_DIR, machine_locust_version

TIERS = ("loadgen",)
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_locust_matches_the_machines_version": "`/opt/locust/venv/bin/pip install locust==X`, X from `locust --version` on this machine",
    "test_workers_run_as_their_own_unprivileged_user": "`useradd --system --home-dir /opt/locust --shell /usr/sbin/nologin locust`",
    "test_run_folder_is_the_workers_alone": "`install -d -o locust -m 700 /opt/locust/run`",
    "test_no_worker_left_running": "`systemctl stop lab-locust-worker`: a worker runs only during `lab bench`",
}


def test_locust_matches_the_machines_version(host):
    reply = host.run(f"{LOCUST_BIN} --version")
    assert reply.rc == 0, reply.stderr
    assert machine_locust_version() in reply.stdout.split()


def test_workers_run_as_their_own_unprivileged_user(host):
    user = host.user(LOCUST_USER)
    assert user.exists
    assert user.shell == "/usr/sbin/nologin"
    assert user.uid != 0


def test_run_folder_is_the_workers_alone(host):
    run_dir = host.file(RUN_DIR)
    assert run_dir.is_directory
    assert run_dir.user == LOCUST_USER
    assert run_dir.mode == 0o700


def test_no_worker_left_running(host):
    # A worker lives only as long as one bench (lab.bench.distributed stops it): none is left between benches.
    assert not host.service("lab-locust-worker").is_running
