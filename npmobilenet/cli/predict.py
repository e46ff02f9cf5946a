"""``npmobilenet predict --weights FILE IMAGE...``: top classes with probabilities per image."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import no_grad
from ..io import class_names, load, load_image
from .arguments import integer
from .errors import report


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="classify images with a model file",
        description="Decode each IMAGE with Pillow, preprocess it as the model file says and "
                    "print the top classes with their probabilities. Unreadable images are "
                    "reported by name (exit code 1); the others are still predicted.")
    parser.add_argument("--weights", required=True, metavar="FILE", help="model file")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--topk", type=integer(1), default=5, help="classes to print per image")
    parser.add_argument("--labels", metavar="FILE", default=None,
                        help="class names, one a line (default: ImageNet names for 1000- and "
                             "1001-class models)")
    parser.add_argument("--trace", metavar="FILE", help="write an op trace to FILE (.json, .dot or a table)")
    parser.set_defaults(func=run)


def run(args) -> int:
    model = load(args.weights)
    if model.preprocess is None:
        raise ValueError(f"{args.weights}: the model file has no preprocessing preset")
    num_classes = model.graph.options.num_classes
    names = class_names(num_classes, args.labels)
    topk = min(args.topk, num_classes)
    failed = 0
    for path in args.images:
        try:
            x = load_image(path, model.preprocess, model.dtype)
        except (ValueError, FileNotFoundError) as error:
            report(str(error))
            failed += 1
            continue
        with no_grad():
            probs = F.softmax(model(x[None]), axis=-1).data[0]
        if not np.isfinite(probs).all():
            report(f"{path}: the model's output is not finite for this image; no prediction")
            failed += 1
            continue
        order = np.argsort(-probs, kind="stable")[:topk]
        print(path)
        for rank, index in enumerate(order, 1):
            print(f"  {rank}. {probs[index]:.4f}  {names[index]} ({index})")
    return 1 if failed else 0
