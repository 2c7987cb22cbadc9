"""Step 6: a hot standby (db2) by streaming replication from the primary; the db tier is built in (max 2)."""

STEP = 6
TITLE = "Tune: a hot standby"
ANSWERS = ("the site through the balancer at https://{lb_ip}/, tuned as the lab asks (`lab status`): "
           "measure each step with `lab bench --tune baseline,pgbouncer,memcached,replica`")
