"""Step 6: the queue tier (q1..N, 0 allowed): Redis on q1 as Celery's broker, a Celery worker running the site's
release on every q host; registers the tier."""

from lab.stack import Link, TierSpec, register_tier

STEP = 6
TITLE = "Tune: a task queue (Redis and Celery)"
MAX_QUEUE_HOSTS = 4
REDIS_PORT = 6379

register_tier(
    # 384 MB: a Celery worker of two processes, each holding the whole site (Django), and a Redis holding a queue
    TierSpec("q", 60, default_count=0, min_count=0, max_count=MAX_QUEUE_HOSTS, memory_mb=384, cpus=1,
             services=("bank-worker",), first_host_services=("redis-server",)),
    links=(
        Link("web", "q", REDIS_PORT, "queue"),  # the site enqueues its tasks on q1's Redis
        Link("q", "q", REDIS_PORT, "queue"),  # the workers of q2.. take them from q1's Redis
        # the workers read and write the bank's database, straight to PostgreSQL (no pgbouncer on a q host)
        Link("q", "db", 5432, "sql"),
    ),
    presets={"full": 2},
)
