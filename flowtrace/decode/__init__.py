"""Pipeline stage: decode."""
