"""CLIP image and text embedders: the registry, the torch and ONNX Runtime backends, preprocessing."""
