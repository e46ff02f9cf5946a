"""Convolution geometry: padding rules and output sizes, shared by every windowed op, the graph
builder and the testing strategies.

Axis legend: N batch, H/W input height/width, OH/OW output height/width, kh/kw kernel size,
s stride, d dilation. Padding is always resolved to ``(top, bottom, left, right)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Pads = tuple[int, int, int, int]


def pair(value, name: str) -> tuple[int, int]:
    """Return ``value`` as a (height, width) pair of positive ints, or raise naming ``name``."""
    items = (value, value) if isinstance(value, int | bool) or not hasattr(value, "__len__") else tuple(value)
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
        raise ValueError(f"{name}: expected a positive int or a pair of positive ints, got {value!r}")
    return items[0], items[1]


def effective_kernel(k: int, d: int) -> int:
    """Span of a kernel of size ``k`` with dilation ``d``."""
    return (k - 1) * d + 1


def same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TF's SAME rule: ``out = ceil(size / s)``, the odd pixel of padding goes after (bottom/right)."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + effective_kernel(k, d) - size, 0)
    return total // 2, total - total // 2


def resolve_padding(padding, size: tuple[int, int], kernel: tuple[int, int],
                    stride: tuple[int, int], dilation: tuple[int, int]) -> Pads:
    """Resolve any accepted padding form to ``(top, bottom, left, right)``.

    Accepted: ``"SAME"`` (TF rule), ``"VALID"``, an int (symmetric, torch style) or
    ``((top, bottom), (left, right))``.
    """
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return 0, 0, 0, 0
        if mode == "SAME":
            return same_pads(size[0], kernel[0], stride[0], dilation[0]) + same_pads(
                size[1], kernel[1], stride[1], dilation[1])
        raise ValueError(f"padding: expected 'SAME', 'VALID', an int or ((top, bottom), (left, right)), "
                         f"got {padding!r}")
    if isinstance(padding, int) and not isinstance(padding, bool):
        if padding < 0:
            raise ValueError(f"padding: must be non-negative, got {padding}")
        return padding, padding, padding, padding
    try:
        (top, bottom), (left, right) = padding
    except (TypeError, ValueError):
        raise ValueError(f"padding: expected 'SAME', 'VALID', an int or ((top, bottom), (left, right)), "
                         f"got {padding!r}") from None
    pads = (top, bottom, left, right)
    if not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in pads):
        raise ValueError(f"padding: explicit pads must be non-negative ints, got {padding!r}")
    return pads


def output_size(size: int, k: int, s: int, d: int, before: int, after: int) -> int:
    """Number of window positions along one axis."""
    return (size + before + after - effective_kernel(k, d)) // s + 1


def conv_output_hw(in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                   dilation: tuple[int, int], pads: Pads, what: str = "input") -> tuple[int, int]:
    """Output (OH, OW); raises if the (dilated) kernel does not fit the padded input."""
    out = []
    for axis, (size, k, s, d, before, after) in enumerate(
            zip(in_hw, kernel, stride, dilation, pads[0::2], pads[1::2])):
        if size + before + after < effective_kernel(k, d):
            raise ValueError(
                f"{what}: {'height' if axis == 0 else 'width'} {size} with padding ({before}, {after}) is "
                f"smaller than the kernel span {effective_kernel(k, d)} (kernel {k}, dilation {d})")
        out.append(output_size(size, k, s, d, before, after))
    return out[0], out[1]


@dataclass(frozen=True)
class ConvGeometry:
    """A convolution's resolved geometry for one input size."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: Pads
    out_hw: tuple[int, int]

    @property
    def is_gemm_view(self) -> bool:
        """A 1x1 kernel over the unpadded, unstrided input: one GEMM on the NHWC view."""
        return self.kernel == (1, 1) and self.stride == (1, 1) and not any(self.pads)


def resolve_geometry(in_hw: tuple[int, int], kernel, stride, padding, dilation,
                     what: str = "x") -> ConvGeometry:
    """Resolve a convolution's geometry on an ``in_hw`` input, naming ``what`` in errors.

    ``padding`` may also be a JSON list ``[[top, bottom], [left, right]]`` (as graphs store it).
    """
    kernel, stride, dilation = pair(kernel, "kernel"), pair(stride, "stride"), pair(dilation, "dilation")
    if isinstance(padding, list):
        padding = tuple(tuple(p) if isinstance(p, list) else p for p in padding)
    pads = resolve_padding(padding, tuple(in_hw), kernel, stride, dilation)
    out_hw = conv_output_hw(tuple(in_hw), kernel, stride, dilation, pads, what=what)
    return ConvGeometry(kernel, stride, dilation, pads, out_hw)
