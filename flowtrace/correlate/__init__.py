"""Pipeline stage: correlate."""
