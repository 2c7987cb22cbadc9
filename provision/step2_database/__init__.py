"""Step 2: configure the database (PostgreSQL on db1; the site's settings and schema on the web hosts)."""

STEP = 2
TITLE = "Configure the database"
