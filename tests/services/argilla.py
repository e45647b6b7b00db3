"""Fixtures that start a real Argilla stack (filled in by the Argilla work)."""
