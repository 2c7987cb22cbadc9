"""Step 1: bootstrap an app instance (every host's basics; the site's code and virtualenv on the web hosts)."""

STEP = 1
TITLE = "Bootstrap an app instance"
