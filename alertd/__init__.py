"""alertd: Redis-stream events in; grouped, deduplicated, durable notifications out."""

__version__ = "0.1.0"
