"""``UniversalInvertedBottleneck``: MobileNetV4's block (Qin et al. 2024, section 3.1).

An optional depthwise convolution before the expansion (``start_kernel``, batch norm, no
activation), the 1x1 ``expand`` to ``t`` times the input width (rounded to ``divisible_by``), an
optional depthwise convolution after it (``mid_kernel``), the linear 1x1 ``project`` to ``c``,
and the residual ``add`` when the stride is 1 and the widths match. A kernel of 0 leaves that
depthwise out, which gives the paper's four variants: ExtraDW (both), IB (middle only),
ConvNext-like (start only) and FFN (neither). The stride ``s`` (first of ``n`` repeats) goes to
the middle depthwise, or to the start one when there is no middle one. Node names follow timm:
``dw_start``, ``expand``, ``dw_mid``, ``project``.
"""

from __future__ import annotations

from ..fields import ACTIVATIONS, channels, integer, number, one_of, repeats, stride
from .registry import BlockType, register_block

optional_kernel = integer(0, 31)


def _check(path: str, row: dict) -> None:
    depthwise = row["start_kernel"] or row["mid_kernel"]
    if not depthwise and row["t"] == 1:
        raise ValueError(f"{path}: a UniversalInvertedBottleneck needs a depthwise convolution "
                         f"(start_kernel or mid_kernel > 0) or an expansion (t != 1)")
    if not depthwise and row["s"] != 1:
        raise ValueError(f"{path}.s: stride {row['s']} needs a depthwise convolution to apply it "
                         f"(start_kernel or mid_kernel > 0)")


def expand(row: dict, b) -> None:
    out_channels = b.depth(row["c"])
    act = row.get("activation", b.options.activation)
    for name, in_channels, stride_, rate in b.bottlenecks(row, "uib"):
        start, mid = row["start_kernel"], row["mid_kernel"]
        if start:
            b.conv(f"{name}/dw_start", start, 1 if mid else stride_, rate, None, "identity",
                   depthwise=True)
        b.conv(f"{name}/expand", 1, 1, 1, b.round(in_channels * row["t"]), act)
        if mid:
            b.conv(f"{name}/dw_mid", mid, stride_, rate, None, act, depthwise=True)
        b.conv(f"{name}/project", 1, 1, 1, out_channels, None)


UNIVERSAL_INVERTED_BOTTLENECK = register_block(BlockType(
    "UniversalInvertedBottleneck", ("v4",),
    {"start_kernel": optional_kernel, "mid_kernel": optional_kernel, "t": number(0, 64, low_open=True),
     "c": channels, "s": stride},
    {"n": repeats, "activation": one_of(*ACTIVATIONS)}, expand, _check))
