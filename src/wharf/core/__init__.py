"""Shared base of every capability: configuration, errors, logging.

Nothing here imports the web framework, the database or a Kubernetes client, so that
model layers can use it freely (an import-linter contract keeps it so).
"""
