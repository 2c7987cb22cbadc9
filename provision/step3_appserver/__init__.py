"""Step 3: set up application servers (Gunicorn under systemd on every web host, static files collected)."""

STEP = 3
TITLE = "Set up application servers"
