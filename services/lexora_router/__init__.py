"""router: picks a ready Triton endpoint for a model, streams tokens back, records the outcome."""
