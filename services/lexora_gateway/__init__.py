"""gateway: the HTTP edge. OpenAI protocol, SSE, errors; everything else is a NATS call away."""
