"""Shared fixtures live in tests/fixtures/, one plugin per area."""

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.settings",
    "tests.fixtures.clip_models",
    "tests.fixtures.multilingual_clip",
    "tests.fixtures.gallery",
    "tests.fixtures.faces",
    "tests.fixtures.captions",
    "tests.fixtures.model_hubs",
    "tests.fixtures.pipeline",
]
