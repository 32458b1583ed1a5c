"""Releases: progressive delivery of an application's revisions across clusters, in waves,
judged by analysis templates against Prometheus, rolled back on their own when they go bad."""
