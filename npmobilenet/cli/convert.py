"""``npmobilenet convert [--from SOURCE] [--arch ARCH] SRC DST``: framework weights to a model
file (weights, spec, options and the source's preprocessing); what is not given is detected."""

from __future__ import annotations

from ..io import save
from ..io.convert import ARCHS, SOURCES, convert
from ..validate import LIMITS
from .arguments import number


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert torchvision/timm, Keras or TF-slim weights to a model file",
        description="Read torchvision MobileNetV2/V3 and timm MobileNetV4 state dicts (.pth "
                    "read without torch: the pickle may only reference tensors; also "
                    ".safetensors), Keras MobileNet/V2/V3 files (.h5, .weights.h5, .keras; a "
                    "transfer-learning model with its Dense classifier) or TF-slim MobileNet "
                    "v1/v2 TensorFlow checkpoints (read without TensorFlow), and write a model "
                    "file. The format comes from SRC's bytes, the framework and architecture "
                    "from its tensor names, the width and number of classes from their shapes; "
                    "a file without its classifier becomes a model returning pooled features. "
                    "DST is written only when every tensor matched.")
    parser.add_argument("--from", dest="source", default=None, choices=SOURCES,
                        help="framework that wrote SRC (default: detected)")
    parser.add_argument("--arch", default=None, choices=ARCHS,
                        help="architecture of SRC (default: detected from its tensor names)")
    parser.add_argument("--depth-multiplier", type=number(0, LIMITS["multiplier"], low_open=True),
                        default=None, metavar="A",
                        help="width multiplier of SRC (default: the first of the usual ones, "
                             "1.0, 0.75, 0.5, 0.35, 0.25, 1.3, 1.4, or of those its shapes imply, "
                             "that fits its shapes)")
    parser.add_argument("--no-ema", dest="ema", action="store_false",
                        help="TF checkpoints: read the raw variables, not their "
                             "ExponentialMovingAverage shadows (used by default when present)")
    parser.add_argument("--verbose", action="store_true",
                        help="list the tensors of SRC the model does not use (TF checkpoints: "
                             "optimizer slots, global_step, ...)")
    parser.add_argument("src", metavar="SRC",
                        help="weights file to read (a TF checkpoint: its prefix, .index or folder)")
    parser.add_argument("dst", metavar="DST", help="model file to write (.safetensors)")
    parser.set_defaults(func=run)


def run(args) -> int:
    result = convert(args.src, args.source, args.arch, args.depth_multiplier, ema=args.ema)
    model = result.model
    save(model, args.dst)
    o = model.graph.options
    head = f"{o.num_classes} classes" if o.num_classes else "headless (pooled features)"
    print(f"{args.src} -> {args.dst}: {result.source} {result.arch}, depth_multiplier "
          f"{o.depth_multiplier}, {head}, {model.num_parameters():,} parameters, "
          f"preprocessing {model.preprocess['name']}")
    for note in result.notes:
        print(f"  {note}")
    if result.ignored:
        print(f"  {len(result.ignored)} tensors of {args.src} not used"
              + (":" if args.verbose else " (--verbose lists them)"))
        if args.verbose:
            for name in result.ignored:
                print(f"    {name}")
    return 0
