"""flowtrace: follow one connection across packet captures through kube-proxy's NAT."""

__version__ = "0.1.0"
__all__ = ["__version__"]
