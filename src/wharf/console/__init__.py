"""The web console: server-rendered pages (Jinja2, htmx from the npm registry)."""
