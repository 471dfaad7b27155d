"""Serving a trained counter: predictors (PyTorch or ONNX Runtime), the SageMaker handler, a local
HTTP server, ONNX and SageMaker export, and endpoint deployment."""

from bincount.serve.predictor import Predictor, load_predictor

__all__ = ["Predictor", "load_predictor"]
