"""Local objectives attached to blocks."""
