"""ONNX backend: per-unit statistics reduced inside the graph and run with onnxruntime."""
