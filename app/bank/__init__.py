"""Django project package for the bank site: settings, URL routing, the WSGI entry point and the Celery app."""
# Imported with the project, so @shared_task binds to this app (its broker, or always-eager) wherever Django runs.
from bank.celery import app as celery_app

__all__ = ("celery_app",)
