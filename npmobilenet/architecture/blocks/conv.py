"""``Conv``: one convolution + batch norm + activation (a stem, or the last 1x1 conv).

Fields: ``kernel``, ``stride``, and the output channels as ``depth`` (scaled by the width
multiplier, at least ``min_multiplier`` times, or not at all with ``"scaled": false``) or as
``expand``, a multiple of the input channels (MobileNetV3's last conv: 6x). ``activation``
overrides the network's.
"""

from __future__ import annotations

from ..fields import ACTIVATIONS, boolean, channels, expansion, kernel_size, multiplier, one_of, stride
from .registry import BlockType, register_block


def _check(path: str, row: dict) -> None:
    if ("depth" in row) == ("expand" in row):
        raise ValueError(f"{path}: give the output channels as exactly one of depth or expand")


def expand(row: dict, b) -> None:
    stride_, rate = b.stride_and_rate(row["stride"])
    if "expand" in row:
        depth = b.round(b.shape[2] * row["expand"])
    else:
        depth = b.depth(row["depth"], row.get("min_multiplier"), row.get("scaled", True))
    b.conv(b.scope("Conv"), row["kernel"], stride_, rate, depth,
           row.get("activation", b.options.activation))


CONV = register_block(BlockType(
    "Conv", ("v1", "v2", "v3", "v4"), {"kernel": kernel_size, "stride": stride},
    {"depth": channels, "expand": expansion, "min_multiplier": multiplier, "scaled": boolean,
     "activation": one_of(*ACTIVATIONS)}, expand, _check))
