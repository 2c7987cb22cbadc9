"""Management commands for the accounts app."""
