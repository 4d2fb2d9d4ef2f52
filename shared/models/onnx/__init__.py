"""CLIP to ONNX: towers, export, checks, manifest and the torch-free tokenizer."""
