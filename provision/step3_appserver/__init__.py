"""Step 3: set up application servers (Gunicorn or Apache + mod_wsgi under systemd on every web host, replacing
step 1's development server; static files collected)."""

STEP = 3
TITLE = "Set up application servers"
ANSWERS = ("{app_server} serves the site on every web host's {port} instead of the development server: "
           "`lab ssh {web1} curl -si http://{web1_ip}:{port}/health/`")
