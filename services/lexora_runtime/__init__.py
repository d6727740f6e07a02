"""Plumbing every service shares: settings, structured logs, metrics, NATS (the database: lexora_db)."""
