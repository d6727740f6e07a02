"""The web console: server-rendered pages at `/`, a client of the account HTTP API (docs/console.md)."""
