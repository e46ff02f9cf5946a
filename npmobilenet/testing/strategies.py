"""Hypothesis strategies for convolution geometry, op inputs, blocks and whole-model options.

Every strategy draws only valid combinations, so a failure is always a real disagreement::

    from hypothesis import given
    from npmobilenet.testing.strategies import conv_geometry

    @given(conv_geometry(depthwise=True))
    def test_my_kernel(geometry):
        x, w = geometry.arrays(np.float64, seed=0)
        ...

``op_cases(name)`` draws complete inputs + attributes for any registered op; the project's own
gradient and torch-twin tests walk the registry with it, so every op is covered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from ..geometry import conv_output_hw, resolve_padding

PADDING_FORMS = ("SAME", "VALID", "int", "explicit")


@dataclass(frozen=True)
class ConvGeometry:
    """One convolution problem: input (N, H, W, C), kernel, stride, dilation and padding.

    ``out_channels`` is Cout for a full convolution; for a depthwise one it is the channel
    multiplier M (output C*M).
    """

    batch: int
    height: int
    width: int
    channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: object
    depthwise: bool = False

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return self.batch, self.height, self.width, self.channels

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        return (*self.kernel, self.channels, self.out_channels)

    @property
    def pads(self) -> tuple[int, int, int, int]:
        return resolve_padding(self.padding, (self.height, self.width), self.kernel, self.stride,
                               self.dilation)

    @property
    def out_hw(self) -> tuple[int, int]:
        return conv_output_hw((self.height, self.width), self.kernel, self.stride, self.dilation,
                              self.pads)

    @property
    def attrs(self) -> dict:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation}

    def arrays(self, dtype=np.float64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Random x and w of this geometry (standard normal; w scaled by 1/sqrt(fan-in))."""
        rng = np.random.default_rng(seed)
        fan_in = self.kernel[0] * self.kernel[1] * (1 if self.depthwise else self.channels)
        x = rng.standard_normal(self.x_shape).astype(dtype)
        w = (rng.standard_normal(self.w_shape) / np.sqrt(fan_in)).astype(dtype)
        return x, w


@st.composite
def conv_geometry(draw, depthwise: bool = False, max_batch: int = 2, max_size: int = 9,
                  max_channels: int = 4, max_kernel: int = 4, max_stride: int = 3,
                  max_dilation: int = 3, max_multiplier: int = 3, max_pad: int = 3,
                  padding_forms=PADDING_FORMS) -> ConvGeometry:
    """A valid convolution problem (the dilated kernel fits the padded input)."""
    kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    dilation = (draw(st.integers(1, max_dilation)), draw(st.integers(1, max_dilation)))
    form = draw(st.sampled_from(padding_forms))
    if form in ("SAME", "VALID"):
        padding = form
    elif form == "int":
        padding = draw(st.integers(0, max_pad))
    else:
        pad = st.integers(0, max_pad)
        padding = (draw(pad), draw(pad)), (draw(pad), draw(pad))
    pads = resolve_padding(padding, (max_size, max_size), kernel, stride, dilation) \
        if not isinstance(padding, str) else (0, 0, 0, 0)
    min_h = max(1, (kernel[0] - 1) * dilation[0] + 1 - pads[0] - pads[1])
    min_w = max(1, (kernel[1] - 1) * dilation[1] + 1 - pads[2] - pads[3])
    height = draw(st.integers(min_h, max(min_h, max_size)))
    width = draw(st.integers(min_w, max(min_w, max_size)))
    channels = draw(st.integers(1, max_channels))
    out_channels = draw(st.integers(1, max_multiplier if depthwise else max_channels))
    return ConvGeometry(draw(st.integers(1, max_batch)), height, width, channels, out_channels,
                        kernel, stride, dilation, padding, depthwise)


@dataclass
class OpCase:
    """Inputs (positional, differentiable) and attributes (keyword) for one registered op."""

    op: str
    inputs: tuple[np.ndarray, ...]
    attrs: dict = field(default_factory=dict)

    def astype(self, dtype) -> "OpCase":
        """The same case in another float dtype (attribute arrays converted too)."""
        attrs = {k: (v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
                 for k, v in self.attrs.items()}
        return OpCase(self.op, tuple(a.astype(dtype) for a in self.inputs), attrs)


def _seed():
    return st.integers(0, 2**32 - 1)


def _away_from_kinks(x, kinks, margin=0.05):
    """Move values off non-differentiable points so finite differences stay one-sided-free."""
    for kink in kinks:
        near = np.abs(x - kink) < margin
        x = np.where(near, kink + np.copysign(2 * margin, x - kink + 1e-12), x)
    return x


@st.composite
def _shape(draw, min_dims=1, max_dims=4, max_side=5):
    return tuple(draw(st.lists(st.integers(1, max_side), min_size=min_dims, max_size=max_dims)))


@st.composite
def _conv_case(draw, op):
    geometry = draw(conv_geometry(depthwise=op == "depthwise_conv2d"))
    x, w = geometry.arrays(np.float64, draw(_seed()))
    return OpCase(op, (x, w), geometry.attrs)


def _normal(rng, shape):
    return rng.standard_normal(shape)


def _away_from_zero(rng, shape):
    """Magnitudes in [0.5, 2]: a divisor whose quotient finite differences resolve."""
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2, shape)


@st.composite
def _broadcast_pair(draw, op, a_values=_normal, b_values=_normal):
    shape = draw(_shape())
    # The second operand drops leading axes and/or has ones where the first has extents.
    drop = draw(st.integers(0, len(shape) - 1))
    other = tuple(n if draw(st.booleans()) else 1 for n in shape[drop:])
    a_shape, b_shape = (shape, other) if draw(st.booleans()) else (other, shape)
    rng = np.random.default_rng(draw(_seed()))
    return OpCase(op, (a_values(rng, a_shape), b_values(rng, b_shape)))


@st.composite
def _neg_case(draw):
    return OpCase("neg", (np.random.default_rng(draw(_seed())).standard_normal(draw(_shape())),))


@st.composite
def _activation_case(draw, op):
    rng = np.random.default_rng(draw(_seed()))
    x = rng.uniform(-3, 9, draw(_shape()))
    return OpCase(op, (_away_from_kinks(x, (0.0, 6.0)),))


@st.composite
def _matmul_case(draw):
    m, k, n = (draw(st.integers(1, 5)) for _ in range(3))
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=1)))
    rng = np.random.default_rng(draw(_seed()))
    return OpCase("matmul", (rng.standard_normal((*batch, m, k)), rng.standard_normal((k, n))))


@st.composite
def _reshape_case(draw):
    shape = draw(_shape())
    rng = np.random.default_rng(draw(_seed()))
    x = rng.standard_normal(shape)
    new_shape = tuple(rng.permutation(shape)) + ((1,) if draw(st.booleans()) else ())
    return OpCase("reshape", (x,), {"shape": new_shape})


@st.composite
def _transpose_case(draw):
    shape = draw(_shape())
    axes = tuple(draw(st.permutations(range(len(shape)))))
    return OpCase("transpose", (np.random.default_rng(draw(_seed())).standard_normal(shape),),
                  {"axes": axes})


@st.composite
def _reduce_case(draw, op):
    shape = draw(_shape())
    axis = draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1),
                          st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True).map(tuple)))
    return OpCase(op, (np.random.default_rng(draw(_seed())).standard_normal(shape),),
                  {"axis": axis, "keepdims": draw(st.booleans())})


@st.composite
def _batch_norm_case(draw):
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4)),
             draw(st.integers(1, 4)))
    if np.prod(shape[:3]) < 2:
        shape = (2, *shape[1:])
    rng = np.random.default_rng(draw(_seed()))
    c = shape[-1]
    x = rng.standard_normal(shape) * rng.uniform(0.5, 2, c) + rng.standard_normal(c)
    gamma, beta = rng.uniform(0.5, 4, c), rng.standard_normal(c) * 2
    training = draw(st.booleans())
    attrs = {"training": training, "eps": draw(st.sampled_from([1e-3, 1e-5])),
             "momentum": draw(st.sampled_from([0.1, 0.003])),
             "activation": draw(st.sampled_from([None, "relu", "relu6"]))}
    if not training:
        attrs.update(running_mean=rng.standard_normal(c), running_var=rng.uniform(0.5, 2, c))
    return OpCase("batch_norm", (x, gamma, beta), attrs)


@st.composite
def _depthwise_batch_norm_case(draw):
    """A depthwise convolution's operands and a batch norm over its output's channels (batch
    statistics need two output values per channel: the batch is doubled when there is one)."""
    geometry = draw(conv_geometry(depthwise=True))
    x, w = geometry.arrays(np.float64, draw(_seed()))
    norm = draw(_batch_norm_case())
    attrs = {**geometry.attrs, **norm.attrs}
    rng = np.random.default_rng(draw(_seed()))
    channels = w.shape[2] * w.shape[3]
    if not attrs["training"]:
        attrs.update(running_mean=rng.standard_normal(channels), running_var=rng.uniform(0.5, 2, channels))
    elif x.shape[0] * geometry.out_hw[0] * geometry.out_hw[1] < 2:
        x = np.concatenate([x, -x])
    gamma, beta = rng.uniform(0.5, 4, channels), rng.standard_normal(channels) * 2
    return OpCase("depthwise_batch_norm", (x, w, gamma, beta), attrs)


@st.composite
def _pool_case(draw):
    geometry = draw(conv_geometry(max_dilation=1, max_kernel=3, max_pad=1))
    kernel = geometry.kernel
    # Every window must hold a real pixel: pads below the kernel size (SAME always satisfies this).
    padding = geometry.padding
    if not isinstance(padding, str) and max(geometry.pads) >= min(kernel):
        padding = "SAME"
    x, _ = geometry.arrays(np.float64, draw(_seed()))
    return OpCase("avg_pool2d", (x,), {"kernel": kernel, "stride": geometry.stride, "padding": padding})


@st.composite
def _global_pool_case(draw):
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 5)),
             draw(st.integers(1, 4)))
    return OpCase("global_avg_pool", (np.random.default_rng(draw(_seed())).standard_normal(shape),))


@st.composite
def _dropout_case(draw):
    shape = draw(_shape())
    rng = np.random.default_rng(draw(_seed()))
    rate = draw(st.sampled_from([0.0, 0.2, 0.5]))
    mask = (rng.random(shape) >= rate) / (1 - rate)
    return OpCase("dropout", (rng.standard_normal(shape),), {"mask": mask})


@st.composite
def _softmax_case(draw, op):
    shape = draw(_shape())
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    x = np.random.default_rng(draw(_seed())).standard_normal(shape) * 3
    return OpCase(op, (x,), {"axis": axis})


@st.composite
def _cross_entropy_case(draw):
    """Labels in each form ``cross_entropy`` takes: class indices, one-hot rows, soft rows."""
    n, k = draw(st.integers(1, 5)), draw(st.integers(2, 6))
    rng = np.random.default_rng(draw(_seed()))
    form = draw(st.sampled_from(["indices", "one_hot", "soft"]))
    labels = rng.integers(0, k, n)
    if form == "one_hot":
        labels = np.eye(k)[labels]
    elif form == "soft":
        labels = rng.dirichlet(np.ones(k), n)
    return OpCase("cross_entropy", (rng.standard_normal((n, k)) * 3,),
                  {"labels": labels, "label_smoothing": draw(st.sampled_from([0.0, 0.1]))})


_OP_CASES = {
    "conv2d": lambda: _conv_case("conv2d"),
    "depthwise_conv2d": lambda: _conv_case("depthwise_conv2d"),
    "depthwise_batch_norm": _depthwise_batch_norm_case,
    "add": lambda: _broadcast_pair("add"),
    "mul": lambda: _broadcast_pair("mul"),
    "sub": lambda: _broadcast_pair("sub"),
    "div": lambda: _broadcast_pair("div", b_values=_away_from_zero),
    # A positive base, so the exponent's gradient a^b log(a) exists.
    "pow": lambda: _broadcast_pair("pow", lambda rng, shape: rng.uniform(0.5, 2, shape),
                                   lambda rng, shape: rng.uniform(-2, 2, shape)),
    "neg": _neg_case,
    "relu": lambda: _activation_case("relu"),
    "relu6": lambda: _activation_case("relu6"),
    "matmul": _matmul_case,
    "reshape": _reshape_case,
    "transpose": _transpose_case,
    "sum": lambda: _reduce_case("sum"),
    "mean": lambda: _reduce_case("mean"),
    "batch_norm": _batch_norm_case,
    "avg_pool2d": _pool_case,
    "global_avg_pool": _global_pool_case,
    "dropout": _dropout_case,
    "softmax": lambda: _softmax_case("softmax"),
    "log_softmax": lambda: _softmax_case("log_softmax"),
    "cross_entropy": _cross_entropy_case,
}


def covered_ops() -> frozenset[str]:
    """The op names ``op_cases`` can draw for."""
    return frozenset(_OP_CASES)


def op_cases(op: str) -> st.SearchStrategy[OpCase]:
    """float64 inputs and attributes for the registered op ``op``."""
    try:
        return _OP_CASES[op]()
    except KeyError:
        raise ValueError(f"no strategy for op '{op}'; known: {sorted(_OP_CASES)}") from None


@st.composite
def inverted_residual_config(draw, max_channels: int = 8) -> dict:
    """A MobileNet v2 bottleneck row: in/out channels, expansion t, repeats n, stride s.

    Half the draws keep the channel count, so the repeats (and a stride-1 first block) are
    residual."""
    in_channels = draw(st.integers(1, max_channels))
    out_channels = in_channels if draw(st.booleans()) else draw(st.integers(1, max_channels))
    return {"in_channels": in_channels, "out_channels": out_channels,
            "expansion": draw(st.sampled_from([1, 2, 6])), "repeats": draw(st.integers(1, 2)),
            "stride": draw(st.sampled_from([1, 2]))}


@st.composite
def separable_config(draw, max_channels: int = 8) -> dict:
    """A MobileNet v1 DepthSepConv layer: in/out channels, stride, kernel."""
    return {"in_channels": draw(st.integers(1, max_channels)),
            "out_channels": draw(st.integers(1, max_channels)),
            "stride": draw(st.sampled_from([1, 2])), "kernel": draw(st.sampled_from([3, 5]))}


@st.composite
def model_options(draw, min_input: int = 32, max_input: int = 96) -> dict:
    """Whole-model options: width multiplier, input size (odd sizes too) and output stride."""
    return {"depth_multiplier": draw(st.sampled_from([0.25, 0.35, 0.5, 0.75, 1.0])),
            "input_size": draw(st.integers(min_input, max_input)),
            "output_stride": draw(st.sampled_from([None, 8, 16, 32]))}
