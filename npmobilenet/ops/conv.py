"""Convolutions: full (im2col + GEMM, 1x1 as a single GEMM) and depthwise (Numba kernels).

Axis legend: x (N, H, W, Cin); full-conv w (kh, kw, Cin, Cout); depthwise w (kh, kw, C, M) with
output channel c*M + m; g is the gradient of the output (N, OH, OW, Cout).
"""

from __future__ import annotations

import numpy as np

from ..geometry import ConvGeometry, resolve_geometry
from ..kernels import depthwise as dw
from ..kernels.im2col import col2im, im2col
from .registry import register


def checked_geometry(op: str, x: np.ndarray, w: np.ndarray, stride, padding, dilation) -> ConvGeometry:
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
        return resolve_geometry(x.shape[1:3], w.shape[:2], stride, padding, dilation)
    except ValueError as error:
        raise ValueError(f"{op}: {error} (x {x.shape}, w {w.shape})") from None


def node_geometry(attrs: dict, in_hw) -> ConvGeometry:
    """The geometry of a conv/depthwise graph node (its attrs) on an ``in_hw`` input."""
    return resolve_geometry(in_hw, tuple(attrs["kernel"]), attrs["stride"], attrs["padding"],
                            attrs["dilation"], what=f"input {in_hw[0]}x{in_hw[1]}")


def conv2d_compute(x, w, geometry: ConvGeometry, out=None, columns=None):
    """The full convolution both paths run: im2col (skipped for a 1x1 GEMM view) and one GEMM.

    ``out`` (N, OH, OW, Cout) and ``columns`` (N, OH, OW, kh, kw, Cin) are optional
    C-contiguous buffers to write into. Returns (out, the (N*OH*OW, kh*kw*Cin) columns).
    """
    kh, kw, cin, cout = w.shape
    n = x.shape[0]
    oh, ow = geometry.out_hw
    if geometry.is_gemm_view:
        columns2d = x.reshape(n * oh * ow, cin)  # a view: no copy
    else:
        columns2d = im2col(x, (kh, kw), geometry.stride, geometry.dilation, geometry.pads,
                           geometry.out_hw, out=columns).reshape(n * oh * ow, kh * kw * cin)
    if out is None:
        out = np.empty((n, oh, ow, cout), x.dtype)
    np.matmul(columns2d, w.reshape(kh * kw * cin, cout), out=out.reshape(n * oh * ow, cout))
    return out, columns2d


def conv2d_forward(x, w, stride=1, padding="SAME", dilation=1):
    geometry = checked_geometry("conv2d", x, w, stride, padding, dilation)
    out, columns = conv2d_compute(x, w, geometry)
    return out, (columns, x.shape, w, geometry)


def conv2d_vjp(g, saved, needs):
    columns, x_shape, w, geometry = saved
    kh, kw, cin, cout = w.shape
    g2d = g.reshape(-1, cout)
    gx = gw = None
    if needs[0]:
        gcolumns = g2d @ w.reshape(-1, cout).T  # (N*OH*OW, kh*kw*Cin)
        if geometry.is_gemm_view:
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
    geometry = checked_geometry("depthwise_conv2d", x, w, stride, padding, dilation)
    out = dw.depthwise_forward(x, w, geometry.stride, geometry.dilation, geometry.pads)
    return out, (x, w, geometry)


def depthwise_conv2d_gradients(g, x, w, geometry, needs):
    """(gx, gw) of a depthwise convolution for the output gradient ``g``; None where not needed."""
    g = np.ascontiguousarray(g)
    gx = gw = None
    if needs[0]:
        gx = dw.depthwise_grad_input(g, w, x.shape[1:3], geometry.stride, geometry.dilation,
                                     geometry.pads)
    if needs[1]:
        gw = dw.depthwise_grad_weight(x, g, w.shape[:2], geometry.stride, geometry.dilation,
                                      geometry.pads)
    return gx, gw


def depthwise_conv2d_vjp(g, saved, needs):
    x, w, geometry = saved
    return depthwise_conv2d_gradients(g, x, w, geometry, needs)


register("depthwise_conv2d", ("x", "w"), depthwise_conv2d_vjp)(depthwise_conv2d_forward)
