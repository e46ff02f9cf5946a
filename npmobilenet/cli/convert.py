"""``npmobilenet convert --from {torchvision,keras,timm} --arch ARCH SRC DST``: framework weights
to a model file (weights, spec, options and the source's preprocessing)."""

from __future__ import annotations

from ..io import convert_file, save
from ..io.convert import ARCHS, SOURCES
from ..validate import LIMITS
from .arguments import number


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert torchvision/timm .pth or Keras .h5 weights to a model file",
        description="Read torchvision MobileNetV2/V3 and timm MobileNetV4 state dicts (.pth "
                    "read without torch: the pickle may only reference tensors; timm also "
                    ".safetensors) or Keras MobileNet/V2/V3 HDF5 weights, and write a model "
                    "file. The number of classes comes from SRC; DST is written only when every "
                    "tensor matched.")
    parser.add_argument("--from", dest="source", required=True, choices=SOURCES,
                        help="framework that wrote SRC")
    parser.add_argument("--arch", required=True, choices=ARCHS, help="architecture of SRC")
    parser.add_argument("--depth-multiplier", type=number(0, LIMITS["multiplier"], low_open=True),
                        default=None, metavar="A",
                        help="width multiplier of SRC (default: the first of the usual ones, "
                             "1.0, 0.75, 0.5, 0.35, 0.25, 1.3, 1.4, that fits its shapes)")
    parser.add_argument("src", metavar="SRC", help="weights file to read")
    parser.add_argument("dst", metavar="DST", help="model file to write (.safetensors)")
    parser.set_defaults(func=run)


def run(args) -> int:
    model = convert_file(args.source, args.arch, args.src, args.depth_multiplier)
    save(model, args.dst)
    o = model.graph.options
    print(f"{args.src} -> {args.dst}: {args.arch}, depth_multiplier {o.depth_multiplier}, "
          f"{o.num_classes} classes, {model.num_parameters():,} parameters, "
          f"preprocessing {model.preprocess['name']}")
    return 0
