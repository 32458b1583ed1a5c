"""Networking for applications: the NodePort register, the domain register (and, built on
them, what applications expose)."""
