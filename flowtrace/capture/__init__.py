"""Pipeline stage: capture."""
