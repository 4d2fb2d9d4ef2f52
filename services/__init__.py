"""HTTP services: the /embed_text API and the reference gallery."""
