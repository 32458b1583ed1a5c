"""Identity and access: users, API tokens, built-in roles and who holds them where."""
