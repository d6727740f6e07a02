"""The OpenAI protocol: chat completions, legacy completions (one prompt or several), their
request schemas, and the answers of reasoning models."""
