"""Fabric recipes and testinfra checks, one folder per step of the Django Deployment Workshop."""
