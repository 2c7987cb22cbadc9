"""Step 5: database connection middleware (pgbouncer on each web host, the site connecting to it on 127.0.0.1)."""

STEP = 5
TITLE = "Pool the database connections"
