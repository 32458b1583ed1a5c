"""Alert rules, incidents, notification channels and silences."""
