"""Logs: live logs of an application's pods across its clusters, and search over their history."""
