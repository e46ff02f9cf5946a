"""``InvertedResidual``: the bottleneck of MobileNet v2 (the ``t, c, n, s`` table) and v3.

Each of ``n`` repeats is ``expand`` (1x1 conv to the expanded width; omitted when that equals
the input width), ``depthwise`` (``kernel``, stride ``s`` on the first repeat only), an optional
``squeeze_excite`` (v3; squeeze width ``make_divisible(expanded // 4, 8)``, ReLU inside, hard
sigmoid gate), ``project`` (1x1 conv, linear) and, when the stride is 1 and the widths match,
the residual ``add``.

The expanded width is given as ``t`` (a ratio of the input width, rounded to ``divisible_by``:
v2, and Keras's v3 with ratios such as 2.3) or ``exp`` (channels, scaled by the width multiplier
like ``c``: the v3 paper's and torchvision's tables).
``activation`` overrides the network's for this row (v3 mixes relu and hard_swish).
"""

from __future__ import annotations

from ..builder import make_divisible
from ..fields import ACTIVATIONS, boolean, channels, kernel_size, number, one_of, repeats, stride
from .registry import BlockType, register_block

SQUEEZE_DIVISOR = 8


def _check(path: str, row: dict) -> None:
    if ("t" in row) == ("exp" in row):
        raise ValueError(f"{path}: give the expanded width as exactly one of t (ratio) or exp "
                         f"(channels)")


def expand(row: dict, b) -> None:
    out_channels = b.depth(row["c"])
    act = row.get("activation", b.options.activation)
    for name, in_channels, stride_, rate in b.bottlenecks(row, "expanded_conv"):
        expanded = b.round(in_channels * row["t"]) if "t" in row else b.depth(row["exp"])
        if expanded != in_channels:
            b.conv(f"{name}/expand", 1, 1, 1, expanded, act)
        b.conv(f"{name}/depthwise", row.get("kernel", 3), stride_, rate, None, act, depthwise=True)
        if row.get("se", False):
            b.node(f"{name}/squeeze_excite", "squeeze_excite", channels=expanded,
                   squeeze=make_divisible(expanded // 4, SQUEEZE_DIVISOR, SQUEEZE_DIVISOR),
                   activation="relu", gate="hard_sigmoid")
        b.conv(f"{name}/project", 1, 1, 1, out_channels, None)


INVERTED_RESIDUAL = register_block(BlockType(
    "InvertedResidual", ("v2", "v3"), {"c": channels, "s": stride},
    {"t": number(0, 64, low_open=True), "exp": channels, "n": repeats, "kernel": kernel_size, "se": boolean,
     "activation": one_of(*ACTIVATIONS)}, expand, _check))
