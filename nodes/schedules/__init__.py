"""schedules nodes."""
