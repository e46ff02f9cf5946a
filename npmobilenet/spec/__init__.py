"""Architecture specs: load and validate JSON specs, expand them into named graphs.

A spec is pure data (see docs/specs.md). The built-in ones ship inside the package in
``npmobilenet/specs/`` and are found by name: ``load_spec("mobilenet_v1")``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from .graph import Graph, Node, expand, make_divisible
from .options import Options, resolve_options
from .schema import validate_spec


def available_specs() -> list[str]:
    """Names of the built-in specs."""
    folder = resources.files("npmobilenet") / "specs"
    return sorted(entry.name[:-5] for entry in folder.iterdir() if entry.name.endswith(".json"))


def load_spec(name_or_path) -> dict:
    """Return a validated spec (a fresh dict) from a built-in name, a JSON file path, or a dict.

    Raises FileNotFoundError for a missing file, ValueError for an unknown name, invalid JSON or
    an invalid spec (naming the JSON path and value).
    """
    if isinstance(name_or_path, Mapping):
        spec = copy.deepcopy(dict(name_or_path))
    else:
        text = str(name_or_path)
        if text.endswith(".json") or "/" in text or Path(text).is_file():
            path = Path(text)
            if not path.is_file():
                raise FileNotFoundError(f"spec file not found: {path}")
            source, raw = str(path), path.read_text()
        elif text in available_specs():
            source = f"built-in spec {text!r}"
            raw = (resources.files("npmobilenet") / "specs" / f"{text}.json").read_text()
        else:
            raise ValueError(f"unknown spec {text!r}: not a file, and not a built-in spec "
                             f"({', '.join(available_specs())})")
        try:
            spec = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source}: invalid JSON: {error}") from None
    validate_spec(spec)
    return spec


def build_graph(spec_or_name, **options) -> Graph:
    """Expand a spec (name, path or dict) under build options into a :class:`Graph`.

    Options (None or absent: the spec's default): input_size, depth_multiplier, min_depth,
    divisible_by (v2), activation, padding, bn_eps, bn_momentum, num_classes, dropout,
    global_pool, output_stride, final_endpoint, init.
    """
    spec = load_spec(spec_or_name)
    return expand(spec, resolve_options(spec, **options))


__all__ = ["Graph", "Node", "Options", "available_specs", "build_graph", "expand", "load_spec",
           "make_divisible", "resolve_options", "validate_spec"]
