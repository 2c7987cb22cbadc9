"""Step 1 check on every host: each listening socket (TCP and UDP, IPv4 and IPv6) is one the stack's links allow.

A deployment expert's first look at a server: `ss -ltun`. Outside loopback, a host may listen only on its own
private address and only on a port some link leads to it (sshd's included: it is the `ssh` link); nothing on a
wildcard address, nothing over UDP, nothing on IPv6 beyond loopback. Loopback is the host's own business. The one
exception is what the provider's own management needs (HostFacts.management_sockets: a Vagrant VM's sshd and DHCP
client on its management NIC); the local provider needs none.
"""

import ipaddress

from lab.stack import all_tiers

TIERS = all_tiers()
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_listening_sockets_are_what_the_links_allow": "`ss -Hltunp` on the host: anything listening beyond what the links allow must go (or bind to 127.0.0.1)",
}


def parse_local(address):
    """(ip or None for a wildcard, port) from ss's local address: "10.0.0.1:80", "[::1]:5432", "*:22", "127.0.0.53%lo:53"."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]").split("%")[0]
    return (None if host in ("*", "0.0.0.0", "::") else ipaddress.ip_address(host)), int(port)


def listening(host):
    """(protocol, ip or None, port, programs) for every listening TCP socket and every bound UDP socket."""
    with host.sudo():  # process names need root
        lines = host.check_output("ss -Hltunp").splitlines()
    sockets = []
    for line in lines:
        fields = line.split()
        ip, port = parse_local(fields[4])
        programs = sorted({part.split('"')[1] for part in line.split("((")[-1].split("),(") if '"' in part})
        sockets.append((fields[0], ip, port, programs))
    return sockets


def test_listening_sockets_are_what_the_links_allow(host, node, lab, facts):
    allowed_ports = {opening.port for opening in lab.inbound(node, facts.control_address) if opening.protocol == "tcp"}
    own = {ipaddress.ip_address(address) for address in lab.addresses(node)}  # a balancer pair's floating one too
    unexpected = [
        f"{protocol} {ip or '*'}:{port} ({', '.join(programs) or '?'})"
        for protocol, ip, port, programs in listening(host)
        if not (ip is not None and ip.is_loopback)
        and not (protocol == "tcp" and ip in own and port in allowed_ports)
        and (protocol, port) not in facts.management_sockets  # the provider's own (a VM's management NIC)
    ]
    assert not unexpected, (f"{node.name} listens where no link of lab/stack.py leads "
                            f"(allowed: tcp {'/'.join(lab.addresses(node))}:{sorted(allowed_ports)} and loopback): "
                            f"{unexpected}")
