"""Step 6: a hot standby (db2) by streaming replication from the primary; the db tier is built in (max 2)."""

STEP = 6
TITLE = "Tune: a hot standby"
