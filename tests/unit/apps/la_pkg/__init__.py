"""Package for dotted app specs (test_app_load)."""
