"""Database migrations for the accounts app."""
