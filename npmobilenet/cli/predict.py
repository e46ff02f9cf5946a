"""``npmobilenet predict --weights FILE INPUT...``: the top classes of each image, for people or
scripts.

INPUTs are image files, folders (searched recursively for image files, in sorted order), glob
patterns (``'photos/**/*.jpg'``, for shells that do not expand them) and ``@LIST`` (a text file
naming one input a line). Images are decoded in threads and classified ``--batch-size`` at a
time; records come out in input order as each batch is done. Class names are the model file's
own (``--labels`` overrides them). ``--format json`` writes JSON lines::

    {"path": "a.jpg", "predictions": [{"label": "tabby", "index": 281, "probability": 0.71}, ...]}
    {"path": "b.png", "error": "b.png: cannot decode image (...)"}

ranked by descending probability; ``--format csv`` one row per image and rank. An input that
cannot be read or classified gets an error record (text: a line on stderr), the others are
still predicted, and the exit code is then 1.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import functional as F
from ..autograd import no_grad
from ..data import IMAGE_EXTENSIONS, MAX_WORKERS
from ..io import load, load_image
from ..io.labels import MAX_LABELS_BYTES, model_class_names
from .arguments import MAX_BATCH, integer
from .errors import report

GLOB_CHARACTERS = frozenset("*?[")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="classify images with a model file",
        description="Preprocess each image as the model file says and write its top classes "
                    "with their probabilities. INPUT: an image file, a folder (recursive), a glob "
                    "pattern, or @LIST (a file naming one input a line). Unreadable images get an "
                    "error record and exit code 1; the others are still predicted.")
    parser.add_argument("--weights", required=True, metavar="FILE", help="model file")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="images, folders, globs or @LIST")
    parser.add_argument("--topk", type=integer(1), default=5,
                        help="classes per image (at most the model's number of classes)")
    parser.add_argument("--labels", metavar="FILE", default=None,
                        help="class names, one a line (default: those the model file stores; for "
                             "files without names, ImageNet's for 1000- and 1001-class models)")
    parser.add_argument("--format", choices=["text", "json", "csv"], default="text",
                        help="text for people; json (one object a line) or csv for scripts")
    parser.add_argument("--batch-size", type=integer(1, MAX_BATCH), default=32, metavar="N",
                        help=f"images per forward pass, in [1, {MAX_BATCH}]")
    parser.add_argument("--workers", type=integer(1, MAX_WORKERS), default=2, metavar="N",
                        help=f"image decoding threads, in [1, {MAX_WORKERS}]")
    parser.add_argument("--trace", metavar="FILE", help="write an op trace to FILE (.json, .dot or a table)")
    parser.set_defaults(func=run)


def expand_inputs(inputs: list[str]):
    """``(path, None)`` for each image the inputs name, in order, or ``(input, error message)``
    for an input that names none."""
    for item in inputs:
        if item.startswith("@"):
            try:
                lines = _read_list(item[1:])
            except (OSError, ValueError) as error:
                yield item, str(error)
                continue
            for line in lines:
                yield from _expand_one(line)
        else:
            yield from _expand_one(item)


def _read_list(path: str) -> list[str]:
    with open(path, "rb") as handle:
        raw = handle.read(MAX_LABELS_BYTES + 1)
    if len(raw) > MAX_LABELS_BYTES:
        raise ValueError(f"{path}: a list of inputs larger than {MAX_LABELS_BYTES} bytes")
    try:
        return [line.strip() for line in raw.decode("utf8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise ValueError(f"{path}: a list of inputs that is not UTF-8 text") from None


def _expand_one(item: str):
    if os.path.isdir(item):
        found = False
        for root, folders, files in os.walk(item):
            folders.sort()
            for name in sorted(files):
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    found = True
                    yield os.path.join(root, name), None
        if not found:
            yield item, f"{item}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in the folder"
    elif os.path.exists(item) or not GLOB_CHARACTERS & set(item):
        yield item, None  # a missing file is reported when it is read
    else:
        matches = sorted(path for path in glob.glob(item, recursive=True) if os.path.isfile(path))
        if not matches:
            yield item, f"{item}: no file matches the pattern"
        for path in matches:
            yield path, None


def _batches(entries, size: int):
    batch = []
    for entry in entries:
        batch.append(entry)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Writer:
    """Writes records in one format: ``prediction(path, ranked)`` or ``error(path, message)``."""

    def __init__(self, form: str):
        self.form = form
        self.csv = csv.writer(sys.stdout, lineterminator="\n") if form == "csv" else None
        if self.csv is not None:
            self.csv.writerow(["path", "rank", "label", "index", "probability", "error"])

    def prediction(self, path: str, ranked: list[tuple[int, str, float]]) -> None:
        if self.form == "json":
            print(json.dumps({"path": path, "predictions": [
                {"label": label, "index": index, "probability": probability}
                for index, label, probability in ranked]}))
        elif self.form == "csv":
            for rank, (index, label, probability) in enumerate(ranked, 1):
                self.csv.writerow([path, rank, label, index, probability, ""])
        else:
            print(path)
            for rank, (index, label, probability) in enumerate(ranked, 1):
                print(f"  {rank}. {probability:.4f}  {label} ({index})")

    def error(self, path: str, message: str) -> None:
        if self.form == "json":
            print(json.dumps({"path": path, "error": message}))
        elif self.form == "csv":
            self.csv.writerow([path, "", "", "", "", message])
        else:
            report(message)


def _decode(entry, preprocess, dtype):
    path, error = entry
    if error is not None:
        return error
    try:
        return load_image(path, preprocess, dtype)
    except FileNotFoundError:
        return f"{path}: no such file"
    except (ValueError, OSError) as failure:
        return str(failure)


def run(args) -> int:
    model = load(args.weights)
    if model.preprocess is None:
        raise ValueError(f"{args.weights}: the model file has no preprocessing preset")
    if model.graph.options.num_classes == 0:
        raise ValueError(f"{args.weights}: a headless model (it returns features, not classes); "
                         f"train a head on it first: npmobilenet train --weights {args.weights} --data DIR")
    names = model_class_names(model, args.weights, args.labels)
    topk = min(args.topk, len(names))
    model.eval()
    writer = _Writer(args.format)
    total = failed = 0
    with ThreadPoolExecutor(args.workers) as pool:
        for batch in _batches(expand_inputs(args.inputs), args.batch_size):
            decoded = list(pool.map(lambda entry: _decode(entry, model.preprocess, model.dtype), batch))
            good = [i for i, x in enumerate(decoded) if isinstance(x, np.ndarray)]
            ranked = {}
            if good:
                with no_grad():
                    logits = model(np.stack([decoded[i] for i in good])).data
                probabilities = F.softmax(logits, axis=-1).data
                for row, i in enumerate(good):
                    if np.isfinite(probabilities[row]).all():
                        order = np.argsort(-logits[row], kind="stable")[:topk]
                        ranked[i] = [(int(k), names[k], float(f"{probabilities[row, k]:.6g}")) for k in order]
                    else:
                        decoded[i] = f"{batch[i][0]}: the model's output is not finite for this image"
            for i, (path, _) in enumerate(batch):
                total += 1
                if i in ranked:
                    writer.prediction(path, ranked[i])
                else:
                    failed += 1
                    writer.error(path, decoded[i])
            sys.stdout.flush()
    if failed and args.format != "text":
        report(f"{failed} of {total} inputs could not be predicted (see their error records)")
    return 1 if failed else 0
