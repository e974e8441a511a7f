"""From alert changes to delivered notifications: grouping, dedup, outbox, retries."""
