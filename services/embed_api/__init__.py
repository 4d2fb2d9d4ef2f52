"""The /embed_text HTTP service: CLIP text embeddings for the gallery backend's text-to-image search."""
