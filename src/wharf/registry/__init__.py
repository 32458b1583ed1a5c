"""Image registries governed by the platform: Wharf as their token server, robot accounts,
pull secrets in every project namespace, notifications in the audit trail, browsing."""
