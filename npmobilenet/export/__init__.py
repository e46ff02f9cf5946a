"""Models out to other runtimes' formats. The formats' packages are optional dependencies
(``pip install "npmobilenet[onnx]"``), imported only when an export runs."""

from .onnx import export_onnx

__all__ = ["export_onnx"]
