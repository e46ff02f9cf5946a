"""Run npmobilenet's readers on many files in one process, for the fuzz tests.

Reads requests from stdin, one JSON line each: ``{"reader": KIND, "paths": [...]}``, KIND one of
``pth``, ``h5``, ``safetensors``, ``spec``. For each path it prints one JSON line:
``{"path", "outcome"}`` where outcome is ``"ok"`` or the exception's type name, plus
``"documented"`` (the exception is a ValueError or FileNotFoundError), ``"nonfinite"`` (names of
accepted weights holding NaN or infinity) and, for an undocumented exception, ``"error"`` with its
traceback. A signal death shows as the pipe closing.
"""

from __future__ import annotations

import json
import sys
import traceback

import numpy as np

from npmobilenet.io import convert_file, load
from npmobilenet.architecture import build_graph, load_spec

READERS = {
    "pth": lambda path: convert_file("torchvision", "mobilenet_v2", path).state_dict(),
    "h5": lambda path: convert_file("keras", "mobilenet_v2", path).state_dict(),
    "safetensors": lambda path: load(path).state_dict(),
    "spec": lambda path: build_graph(load_spec(path)) and {},
}


def attempt(reader: str, path: str) -> dict:
    try:
        weights = READERS[reader](path)
    except (ValueError, FileNotFoundError) as error:
        return {"path": path, "outcome": type(error).__name__, "documented": True}
    except Exception as error:  # noqa: BLE001 -- reported to the test, which fails on it
        return {"path": path, "outcome": type(error).__name__, "documented": False,
                "error": traceback.format_exc()}
    nonfinite = [name for name, value in weights.items()
                 if value.dtype.kind == "f" and not np.isfinite(value).all()]
    return {"path": path, "outcome": "ok", "documented": True, "nonfinite": nonfinite}


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        for path in request["paths"]:
            print(json.dumps(attempt(request["reader"], path)), flush=True)


if __name__ == "__main__":
    main()
