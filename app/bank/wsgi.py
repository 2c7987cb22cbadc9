"""WSGI entry point (bank.wsgi:application) for Gunicorn and Apache mod_wsgi."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bank.settings")

application = get_wsgi_application()
