"""Image captioning (BLIP)."""
