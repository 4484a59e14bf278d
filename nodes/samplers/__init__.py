"""samplers nodes."""
