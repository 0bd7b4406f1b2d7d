"""Serving a trained module: a stdlib HTTP endpoint (`tunerl serve`), a Ray Serve
deployment of the same inference (optional extra `serve`), and inference-only exports to
ONNX and TorchScript (`tunerl export`)."""
