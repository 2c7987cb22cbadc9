"""Step 1: bootstrap an app instance (every host's basics; the site's code, virtualenv and settings on the web hosts;
Django's development server on SQLite on web1)."""

STEP = 1
TITLE = "Bootstrap an app instance"
# What answers once the step is done, and how to see it (lab.workshop.what_answers fills the fields in).
ANSWERS = ("{web1}: Django's development server on SQLite answers on {web1_ip}:{port}: "
           "`lab ssh {web1} curl -si http://{web1_ip}:{port}/health/` (Server: WSGIServer)")
