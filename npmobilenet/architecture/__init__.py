"""Architecture specs: load and validate JSON specs, expand them into named graphs.

A spec is pure data (see docs/specs.md). The built-in ones ship inside the package in
``npmobilenet/specs/`` and are found by name: ``load_spec("mobilenet_v1")``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from ..validate import LIMITS
from .builder import make_divisible
from .expand import expand
from .graph import Graph, Node
from .options import Options, resolve_options
from .schema import validate_spec


def available_specs() -> list[str]:
    """Names of the built-in specs."""
    folder = resources.files("npmobilenet") / "specs"
    return sorted(entry.name[:-5] for entry in folder.iterdir() if entry.name.endswith(".json"))


MAX_SPEC_BYTES = 1 << 20  # a spec is a table of a few dozen rows; 1 MiB is far beyond any


def is_spec_path(text: str) -> bool:
    """Whether a spec argument names a file: it ends in ``.json`` or holds a path separator.

    Anything else is a built-in name, so a file that happens to be called ``mobilenet_v1`` in the
    current folder never replaces the built-in spec (write ``./mobilenet_v1`` to mean the file).
    """
    return text.endswith(".json") or "/" in text or os.sep in text


def load_spec(name_or_path) -> dict:
    """Return a validated spec (a fresh dict) from a built-in name, a JSON file path, or a dict.

    A string is a path when :func:`is_spec_path` says so, a built-in name otherwise. Raises
    FileNotFoundError for a missing file, ValueError for an unknown name, a file over 1 MiB,
    invalid or too deeply nested JSON, or an invalid spec (naming the JSON path and value).
    """
    if isinstance(name_or_path, Mapping):
        _check_depth(name_or_path, "spec")
        spec = copy.deepcopy(dict(name_or_path))
    else:
        text = os.fspath(name_or_path)
        if is_spec_path(text):
            source, raw = text, _read_spec_file(Path(text))
        elif text in available_specs():
            source = f"built-in spec {text!r}"
            raw = (resources.files("npmobilenet") / "specs" / f"{text}.json").read_text()
        else:
            hint = f"; to read the file, write ./{text}" if Path(text).is_file() else ""
            raise ValueError(f"unknown spec {text!r}: not a built-in spec "
                             f"({', '.join(available_specs())}) and not a path{hint}")
        spec = _parse_json(raw, source)
    validate_spec(spec)
    return spec


def _read_spec_file(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"spec file not found: {path}")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size} bytes, more than a spec file may hold "
                         f"({MAX_SPEC_BYTES})")
    try:
        return path.read_text(encoding="utf8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text: {error}") from None


def _parse_json(raw: str, source: str):
    try:
        value = json.loads(raw)
    except ValueError as error:  # JSONDecodeError, or an integer past the digit limit
        raise ValueError(f"{source}: invalid JSON: {error}") from None
    except RecursionError:
        raise ValueError(f"{source}: JSON nested too deeply") from None
    _check_depth(value, source)
    return value


def _check_depth(value, source: str) -> None:
    """Refuse a value nested deeper than ``LIMITS["nesting_depth"]``, walking it iteratively and
    no deeper than the limit (so neither Python's recursion limit nor a cycle is reached)."""
    limit, stack = LIMITS["nesting_depth"], [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise ValueError(f"{source}: nested more than {limit} levels deep")
        if isinstance(item, Mapping):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)


def build_graph(spec_or_name, **options) -> Graph:
    """Expand a spec (name, path or dict) under build options into a :class:`Graph`.

    Options (None or absent: the spec's default): input_size, depth_multiplier, min_depth,
    divisible_by (v2), activation, padding, bn_eps, bn_momentum, num_classes, dropout,
    global_pool, output_stride, final_endpoint, init.
    """
    spec = load_spec(spec_or_name)
    return expand(spec, resolve_options(spec, **options))


__all__ = ["Graph", "Node", "Options", "available_specs", "build_graph", "expand", "load_spec",
           "is_spec_path", "make_divisible", "resolve_options", "validate_spec"]
