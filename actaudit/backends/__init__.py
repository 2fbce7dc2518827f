"""Format backends. Only modules under this package import torch, onnx or onnxruntime."""
