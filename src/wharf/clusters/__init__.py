"""Clusters and node pools: registration, encrypted credentials, health and capacity."""
