"""Management commands for the accounts app (load_sample_data)."""
