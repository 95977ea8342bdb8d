"""Pipeline stage: detect — the anomaly catalog, one detector per code."""
