"""What an API key's holder can ask about their account (usage, the key, credits) and credit
top-ups (packages, Stripe Checkout, Stripe's webhook)."""
