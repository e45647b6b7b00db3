"""Fixtures that start a real Label Studio (filled in by the Label Studio work)."""
