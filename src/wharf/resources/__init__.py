"""The generic resource machinery every kind shares: use cases (service) and REST routes (api)."""
