"""graph-engine: YAML inference graphs of ONNX models served over the Open Inference Protocol."""

__version__ = "0.1.0"
