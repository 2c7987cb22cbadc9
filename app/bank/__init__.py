"""Django project package for the bank site: settings, URL routing and the WSGI entry point."""
