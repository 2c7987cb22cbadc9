#!/usr/bin/env python
"""Command-line entry point for administering the bank site (runserver, migrate, tests...)."""
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bank.settings")
    try:
        from django.core.management import execute_from_command_line
    except ImportError as exc:
        raise ImportError(
            "Couldn't import Django. Is the virtualenv from requirements.txt active?"
        ) from exc
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
