"""io nodes."""
