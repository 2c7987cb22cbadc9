"""Step 5: the balancer pair (lb1 and lb2, "hot failover"): keepalived holds the site's floating address on one of
them; registers the VRRP link between the two."""

from lab.stack import Link, register_links

STEP = 5
TITLE = "Balance in pairs: hot failover"

# keepalived's adverts, unicast from each balancer to its peer: the firewall lets VRRP in from the other balancer
# only (a lab with one balancer has no peer, so the link opens nothing).
register_links(Link("lb", "lb", 0, "vrrp", protocol="vrrp"))
