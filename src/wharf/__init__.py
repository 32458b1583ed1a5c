"""Wharf: an enterprise container-cloud PaaS on Kubernetes."""

__version__ = "0.1.0"
