"""Inputs beside captures: conntrack dumps, Kubernetes snapshots, manifests."""
