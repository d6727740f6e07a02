"""Plumbing every service shares: settings, structured logs, metrics, NATS and database helpers."""
