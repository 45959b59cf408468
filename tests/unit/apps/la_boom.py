"""A module that exists but fails while being imported."""
raise RuntimeError("boom")
