"""auth: accounts and API keys (stored hashed), key verification for the gateway."""
