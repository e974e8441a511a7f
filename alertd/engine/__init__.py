"""Rule evaluation: windows, aggregates, the alert lifecycle."""
