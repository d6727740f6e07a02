"""Who may run what: API keys verified (and cached), plan limits counted in shared counters, and a
job admitted: its model resolved, the request counted, its credit held."""
