"""Face detection, alignment and description: the registry and both face backends."""
