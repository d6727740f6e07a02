"""The Anthropic Messages protocol: messages, token counting, their request schemas, and the
thinking blocks of reasoning models."""
