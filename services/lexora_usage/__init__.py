"""usage: durable usage events from JetStream into queryable storage."""
