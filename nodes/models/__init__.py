"""models nodes."""
