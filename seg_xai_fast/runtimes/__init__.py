"""Runtimes other than eager PyTorch: ONNX export (export.py), the ONNX Runtime explainer
(onnx_explainer.py) and the command line's choice between runtimes with its cache (choice.py)."""
from .export import export_logits_onnx, export_onnx
from .onnx_explainer import OnnxExplainer

__all__ = ["OnnxExplainer", "export_logits_onnx", "export_onnx"]
