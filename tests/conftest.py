"""Shared fixtures. Real servers are started by the plugins in tests/services/ when a test asks for them."""

pytest_plugins = ["tests.services.labelstudio", "tests.services.argilla"]
