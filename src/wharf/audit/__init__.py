"""The audit trail: every mutation, allowed or denied, queryable by tenant admins for their own
tenant and by platform admins and viewers for all."""
