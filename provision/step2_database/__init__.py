"""Step 2: configure the database (PostgreSQL on db1; the site switched to it, its schema and data there)."""

STEP = 2
TITLE = "Configure the database"
ANSWERS = ("the same site on {web1}:{port}, its data now in PostgreSQL on {db1}: "
           "`lab ssh {db1} sudo -u postgres psql -d bank -c 'select count(*) from accounts_account'`")
