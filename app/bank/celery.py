"""The site's Celery app: the queue tier's workers run it; with no queue configured its tasks run in the request."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bank.settings")

app = Celery("bank")
# Every CELERY_* Django setting (bank.settings builds them from bank.toml's queue_* keys).
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
