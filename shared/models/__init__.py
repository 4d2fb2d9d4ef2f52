"""Model backends by capability (clip, caption, face), ONNX export (onnx) and the model store (store)."""
