"""Step 5: scale up to multiple web servers (nginx on lb1 balancing every web host, serving static files)."""

STEP = 5
TITLE = "Scale up to multiple web servers"
ANSWERS = "the site through the balancer: https://{lb_ip}/ (`lab creds` for a login, `lab ca` for its CA)"
