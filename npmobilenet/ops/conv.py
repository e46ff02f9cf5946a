"""Convolutions: full (im2col + GEMM, 1x1 as a single GEMM) and depthwise (Numba kernels).

Axis legend: x (N, H, W, Cin); full-conv w (kh, kw, Cin, Cout); depthwise w (kh, kw, C, M) with
output channel c*M + m; g is the gradient of the output (N, OH, OW, Cout).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels import depthwise as dw
from ..kernels.geometry import Pads, conv_output_hw, pair, resolve_padding
from ..kernels.im2col import col2im, im2col
from .registry import register


@dataclass(frozen=True)
class ConvGeometry:
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: Pads
    out_hw: tuple[int, int]

    @property
    def is_pointwise_gemm(self) -> bool:
        """A 1x1 kernel over the unpadded, unstrided input: one GEMM on the NHWC view."""
        return self.stride == (1, 1) and not any(self.pads)


def conv_geometry(op: str, x: np.ndarray, w: np.ndarray, stride, padding, dilation) -> ConvGeometry:
    """Validate a convolution's operands and resolve its geometry, naming ``op`` in errors."""
    if x.ndim != 4:
        raise ValueError(f"{op}: x must be NHWC (N, H, W, C), got shape {x.shape}")
    layout = "(kh, kw, C, M)" if op.startswith("depthwise") else "(kh, kw, Cin, Cout)"
    if w.ndim != 4:
        raise ValueError(f"{op}: w must be {layout}, got shape {w.shape}")
    if w.shape[2] != x.shape[3]:
        raise ValueError(f"{op}: x has {x.shape[3]} channels but w {layout} expects {w.shape[2]} "
                         f"(x {x.shape}, w {w.shape})")
    if 0 in w.shape:
        raise ValueError(f"{op}: w has an empty dimension, shape {w.shape}")
    try:
        stride = pair(stride, "stride")
        dilation = pair(dilation, "dilation")
        pads = resolve_padding(padding, x.shape[1:3], w.shape[:2], stride, dilation)
        out_hw = conv_output_hw(x.shape[1:3], w.shape[:2], stride, dilation, pads, what="x")
    except ValueError as error:
        raise ValueError(f"{op}: {error} (x {x.shape}, w {w.shape})") from None
    return ConvGeometry(stride, dilation, pads, out_hw)


def conv2d_forward(x, w, stride=1, padding="SAME", dilation=1):
    geometry = conv_geometry("conv2d", x, w, stride, padding, dilation)
    kh, kw, cin, cout = w.shape
    n = x.shape[0]
    oh, ow = geometry.out_hw
    w2d = w.reshape(kh * kw * cin, cout)
    if (kh, kw) == (1, 1) and geometry.is_pointwise_gemm:
        columns = x.reshape(n * oh * ow, cin)  # a view: no copy
    else:
        columns = im2col(x, (kh, kw), geometry.stride, geometry.dilation, geometry.pads,
                         geometry.out_hw).reshape(n * oh * ow, kh * kw * cin)
    out = (columns @ w2d).reshape(n, oh, ow, cout)
    return out, (columns, x.shape, w, geometry)


def conv2d_vjp(g, saved, needs):
    columns, x_shape, w, geometry = saved
    kh, kw, cin, cout = w.shape
    g2d = g.reshape(-1, cout)
    gx = gw = None
    if needs[0]:
        gcolumns = g2d @ w.reshape(-1, cout).T  # (N*OH*OW, kh*kw*Cin)
        if (kh, kw) == (1, 1) and geometry.is_pointwise_gemm:
            gx = gcolumns.reshape(x_shape)
        else:
            n, oh, ow = g.shape[:3]
            gx = col2im(gcolumns.reshape(n, oh, ow, kh, kw, cin), x_shape[1:3], (kh, kw),
                        geometry.stride, geometry.dilation, geometry.pads)
    if needs[1]:
        gw = (columns.T @ g2d).reshape(w.shape)
    return gx, gw


register("conv2d", ("x", "w"), conv2d_vjp)(conv2d_forward)


def depthwise_conv2d_forward(x, w, stride=1, padding="SAME", dilation=1):
    geometry = conv_geometry("depthwise_conv2d", x, w, stride, padding, dilation)
    out = dw.depthwise_forward(x, w, geometry.stride, geometry.dilation, geometry.pads)
    return out, (x, w, geometry)


def depthwise_conv2d_vjp(g, saved, needs):
    x, w, geometry = saved
    g = np.ascontiguousarray(g)
    gx = gw = None
    if needs[0]:
        gx = dw.depthwise_grad_input(g, w, x.shape[1:3], geometry.stride, geometry.dilation,
                                     geometry.pads)
    if needs[1]:
        gw = dw.depthwise_grad_weight(x, g, w.shape[:2], geometry.stride, geometry.dilation,
                                      geometry.pads)
    return gx, gw


register("depthwise_conv2d", ("x", "w"), depthwise_conv2d_vjp)(depthwise_conv2d_forward)
