"""What the OpenAI and Anthropic chat protocols share: the protocol-free chat job, reasoning, tool
calling, and image inputs (checked, and fetched safely)."""

# The most messages (or Responses input items) one chat request may carry (400 above it): a bound on
# the work of reading a request, well above what any context window holds.
MAX_MESSAGES = 10_000
