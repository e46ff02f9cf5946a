"""``DepthSepConv``: MobileNet v1's layer, a depthwise convolution then a 1x1 convolution,
each with batch norm and activation (TF-slim names ``Conv2d_<row>_depthwise``/``_pointwise``)."""

from __future__ import annotations

from ..fields import channels, kernel_size, stride
from .registry import BlockType, register_block


def expand(row: dict, b) -> None:
    stride_, rate = b.stride_and_rate(row["stride"])
    depth = b.depth(row["depth"])
    scope, act = b.scope("Conv2d"), b.options.activation
    b.conv(f"{scope}_depthwise", row["kernel"], stride_, rate, None, act, depthwise=True)
    b.conv(f"{scope}_pointwise", 1, 1, 1, depth, act)


DEPTH_SEP_CONV = register_block(BlockType(
    "DepthSepConv", ("v1",), {"kernel": kernel_size, "stride": stride, "depth": channels}, {},
    expand))
