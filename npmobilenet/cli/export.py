"""``npmobilenet export MODEL ONNX [--layout nchw|nhwc]``: a model file to ONNX (needs the
optional ``onnx`` package: ``pip install "npmobilenet[onnx]"``)."""

from __future__ import annotations

from ..io import load
from ..validate import LIMITS
from .arguments import integer


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="export a model file to ONNX",
        description="Write MODEL as an ONNX graph (opset 17, float32, batch norm folded, dynamic "
                    "batch dimension) whose output is the logits (a headless model's features), "
                    "with the class names, preprocessing, spec and options in its "
                    "metadata_props; the graph passes onnx.checker's full check. Needs the onnx "
                    "package (pip install 'npmobilenet[onnx]').")
    parser.add_argument("model", metavar="MODEL", help="model file (.safetensors)")
    parser.add_argument("output", metavar="ONNX", help="ONNX file to write")
    parser.add_argument("--layout", choices=("nchw", "nhwc"), default="nchw",
                        help="input layout: (N, 3, H, W) as torch exports, or (N, H, W, 3)")
    parser.add_argument("--input-size", type=integer(1, LIMITS["image_side"]), nargs="+",
                        metavar="SIDE", default=None,
                        help="input height [width] of the graph (default: the model's)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..export import export_onnx

    model = load(args.model)
    size = args.input_size
    if size is not None and len(size) > 2:
        raise ValueError(f"--input-size: expected 1 or 2 numbers, got {len(size)}")
    input_size = None if size is None else (size[0], size[-1])
    try:
        export_onnx(model, args.output, args.layout, input_size)
    except ImportError as error:  # the optional dependency: an environment problem, exit 1
        raise RuntimeError(str(error)) from None
    h, w = input_size or model.graph.options.input_size
    dtype = "" if model.dtype == "float32" else f" (weights rounded from {model.dtype} to float32)"
    print(f"{args.model} -> {args.output}: input {args.layout.upper()} of {h}x{w}, dynamic "
          f"batch{dtype}")
    return 0
