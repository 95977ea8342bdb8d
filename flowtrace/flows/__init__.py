"""Pipeline stage: flows."""
