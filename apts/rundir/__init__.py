"""A run directory: its files and their strict-JSON format, and claiming and locking a
directory for one run. The runner writes through it; the report reads through it."""
