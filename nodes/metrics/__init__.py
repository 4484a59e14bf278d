"""metrics nodes."""
