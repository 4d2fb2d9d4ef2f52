"""Shared fixtures live in tests/fixtures/, one plugin per area."""

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.settings",
]
