"""Step 6 checks on the search hosts: xapian-tcpsrv running as its own user, on the private address only, its
index folder its own."""

from provision.step6_search import SEARCH_PORT
from provision.step6_search.recipes import DATA_DIR, SERVER_UNIT, SERVER_USER

TIERS = ("search",)
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_the_search_server_listens_on_the_private_address_only": "`--interface <its IP> --port 33333` in /etc/systemd/system/xapian-tcpsrv.service, daemon-reload, restart; `ss -ltnp`",
    "test_the_search_server_runs_as_its_own_user_and_owns_its_index": "`User=xapian` in the unit; /var/lib/xapian-search xapian:xapian 0750",
}


def test_the_search_server_listens_on_the_private_address_only(host, node):
    assert host.service(SERVER_UNIT).is_running
    assert host.socket(f"tcp://{node.ip}:{SEARCH_PORT}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{SEARCH_PORT}").is_listening
    assert not host.socket(f"tcp://127.0.0.1:{SEARCH_PORT}").is_listening


def test_the_search_server_runs_as_its_own_user_and_owns_its_index(host):
    users = host.check_output("ps -o user= -C xapian-tcpsrv").split()
    assert users and set(users) == {SERVER_USER}, f"xapian-tcpsrv runs as {users}"
    with host.sudo():
        folder = host.file(DATA_DIR)
        assert (folder.user, folder.group, folder.mode) == (SERVER_USER, SERVER_USER, 0o750)
        assert host.file(f"{DATA_DIR}/bank/iamglass").exists  # the database xapian-tcpsrv --writable made
