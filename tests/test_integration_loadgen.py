"""Locust's distributed mode on a lab with one loadgen host: the host is provisioned with the machine's Locust, its
worker reaches the master on the machine's bridge address, the run's requests go through lb1 over the lab network,
and when the run ends no worker and none of its files are left on the host."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lab.bench.distributed import ENV_FILE, remote_workers
from lab.lifecycle import Project, ca_file, running_lab, site_url
from lab.recipes import PROJECT_ROOT
from lab.testing import needs_root, scratch_lab

NAME = os.environ.get("TEST_LAB_NAME", "labloadgen")
pytestmark = pytest.mark.integration

needs_root()

LOCUST = Path(sys.executable).parent / "locust"
USERS = 4
RUN_S = 10


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    with scratch_lab(NAME, range(180, 199), folder=tmp_path_factory.mktemp("loadgen")) as lab:
        with open(lab.folder / "lab.toml", "a") as config:
            config.write("\n[tiers.loadgen]\ncount = 1\n")
        lab.ok("up")
        yield lab


def free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def test_the_loadgen_host_passes_its_checks(lab):
    lab.ok("test", "--tier", "loadgen")


def test_a_distributed_run_gets_its_requests_from_the_loadgen_worker(lab, tmp_path):
    project = Project.here(lab.folder, environ={})
    _, topology = running_lab(project)
    assert [h.name for h in topology.hosts if h.tier == "loadgen"] == ["loadgen1"]
    master_host, master_port = topology.gateway, free_port(topology.gateway)
    master = [
        str(LOCUST), "-f", str(PROJECT_ROOT / "loadtests" / "hello.py"), "--master", "--master-bind-host", master_host,
        "--master-bind-port", str(master_port), "--expect-workers", "1", "--expect-workers-max-wait", "60",
        "--headless", "-u", str(USERS), "-r", str(USERS), "-t", f"{RUN_S}s", "--host", site_url(topology),
        "--json", "--only-summary", "--stop-timeout", "2", "--loglevel", "WARNING",
    ]
    tls = {"LAB_CA_FILE": str(ca_file(project))}  # master and worker verify lb1 against the lab's own CA
    with remote_workers(project, topology, PROJECT_ROOT / "loadtests" / "hello.py", master_host, master_port,
                        {"LAB_RUN": "loadgen-test", **tls}) as workers:
        assert workers == 1
        state = lab.ok("ssh", "loadgen1", "systemctl is-active lab-locust-worker; stat -c '%a %U' " + ENV_FILE)
        assert state.split() == ["active", "600", "locust"]
        run = subprocess.run(master, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_S + 120,
                             stdin=subprocess.DEVNULL, env={**os.environ, **tls})
    assert run.returncode == 0, run.stderr[-2000:]
    [endpoint] = json.loads(run.stdout)
    # The master runs no users of its own: every request came from the worker on loadgen1, through lb1.
    assert endpoint["num_requests"] > USERS * RUN_S
    assert endpoint["num_failures"] == 0
    left = lab.run("ssh", "loadgen1", f"systemctl is-active lab-locust-worker; ls -A {Path(ENV_FILE).parent}")
    assert left.stdout.split() == ["inactive"]  # no worker, no locustfile, no environment left behind


def test_lab_bench_on_a_lab_with_a_loadgen_host_writes_its_report(lab):
    output = lab.ok("bench", "--scenario", "hello", "--users", str(USERS), "--duration", "6", "--warmup", "3",
                    "--repeats", "1", timeout=300)
    assert "Locust's users run on loadgen1" in output
    run = sorted((lab.folder / ".lab" / "results").iterdir())[-1]
    saved = json.loads((run / "results.json").read_text())
    [cell] = saved["cells"]
    assert cell["median"]["rps"] > 0 and saved["complete"] is True
    assert "loadgen1" in saved["cpu_split"] and (run / "report.html").is_file()
    left = lab.run("ssh", "loadgen1", "systemctl is-active lab-locust-worker")
    assert left.stdout.split() == ["inactive"]
