"""What the OpenAI and Anthropic chat protocols share: the protocol-free chat job, reasoning, tool
calling, and image inputs (checked, and fetched safely)."""
