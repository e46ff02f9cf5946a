"""Write the small real-framework weight files that the conversion tests use.

Run by hand in an environment with torch, torchvision, tensorflow-cpu (Keras 3) and h5py:

    python scripts/make_fixtures.py [OUTDIR]        # default tests/fixtures

It writes, with randomised weights and batch-norm statistics (so a wrong eps or a transposed
layout shows in the outputs):

- ``torchvision_mobilenet_v2.pth``: ``torchvision.models.mobilenet_v2(width_mult=0.25,
  num_classes=10)`` state dict, zip format (what ``torch.save`` writes);
- ``keras_mobilenet_v1.h5`` / ``keras_mobilenet_v2.h5`` (alpha 0.25, 10 classes) in the Keras-2
  layout of the ImageNet weight files keras.applications downloads (top-level layer groups,
  ``layer_names`` / ``weight_names`` attributes, ``:0`` suffixes), and ``*_keras3.h5``: the legacy
  full-model file Keras 3 writes with ``model.save("x.h5")``;
- ``expected_<name>.npz``: for each input size, ``x_HxW`` (N, H, W, 3) float32 inputs and
  ``logits_HxW`` (N, classes) float64 logits computed by the source framework in float64 from the
  same (float32) weights. Sizes include odd and non-square ones.

MobileNetV3 / V4 (see docs/notes/v3_v4_reference.md for the architectures, names and padding):

- ``torchvision_mobilenet_v3_large.pth`` (``width_mult=0.25``) and
  ``torchvision_mobilenet_v3_small.pth`` (``width_mult=0.35``), 10 classes, zip format;
- ``keras_mobilenet_v3_{large,small}[_minimalistic].h5`` (Keras-2 layout) and ``*_keras3.h5``
  (``model.save``, legacy HDF5): ``keras.applications.MobileNetV3Large`` (alpha 0.15) /
  ``MobileNetV3Small`` (alpha 0.25), ``input_shape=(None, None, 3)``, ``include_preprocessing=True``
  (so their inputs ``x_HxW`` are in [0, 255]), ``classifier_activation=None``; plus
  ``keras_mobilenet_v3_small.weights.h5`` (``model.save_weights``) and
  ``keras_mobilenet_v3_small.keras`` (``model.save``, zip archive). Their ``logits_HxW`` come from
  the same (None, None, 3) model, whose stride-2 depthwise pads are fixed at
  ``(k//2 - 1, k//2)`` whatever the size; ``logits_static_HxW`` come from the model built at
  exactly (H, W, 3), where ``correct_pad`` sees the size (equal to TF SAME padding everywhere);
  the two agree on even sizes only;
- ``timm_mobilenet_v4_conv_small.pth`` / ``.safetensors``: timm's ``mobilenetv4_conv_small``
  builder with ``channel_multiplier=0.25`` and 10 classes (``timm.create_model`` cannot pass a
  multiplier to this model, so the script calls the builder it wraps, ``_gen_mobilenet_v4``).

Made with TensorFlow / Keras 3 / torchvision as well (``--only`` names in brackets):

- ``tf_slim_mobilenet_{v1,v2}/`` [``tf_slim_mobilenet_v1``, ``..._v2``]: TF-slim checkpoints
  written by TF's own (TF1) ``Saver`` under slim's variable names (``MobilenetV1/Conv2d_0/weights``,
  ``.../BatchNorm/moving_mean``, ``MobilenetV1/Logits/Conv2d_1c_1x1/biases``), with
  ExponentialMovingAverage shadows of every model variable, RMSProp slots and ``global_step``,
  a ``checkpoint`` file naming ``model.ckpt-1000``; v1 at the unusual multiplier 0.125 with the
  1001-class head, v2 at 0.25 with slim's default batch norm (no gamma) and
  ``finegrain_classification_mode=False``. ``expected_tf_slim_*.npz``: ``logits_HxW`` from TF's
  float64 forward of the shadows (slim's layers in TF ops), ``logits_raw_HxW`` of the raw values;
- ``keras_mobilenet_{v1,v2}.keras`` [``keras3_mobilenet_v1``, ``..._v2``]: Keras 3's
  ``model.save`` (its ``model.weights.h5`` member is the ``.weights.h5`` layout), alpha 0.25,
  10 classes, ``expected_keras3_*.npz``;
- ``keras_mobilenet_v2_notop.h5`` (Keras-2 layout, no pooling) and
  ``keras_mobilenet_v1_notop_avg.keras`` (``pooling="avg"``): ``include_top=False`` bases;
  ``features_HxW`` are the globally averaged features;
- ``keras_transfer_<arch>{.h5,_keras3.h5,.keras}`` [``keras_transfer_<arch>``]: the keras.io
  transfer-learning recipe (a nested base, GlobalAveragePooling2D, Dropout(0.2),
  Dense(5, softmax)) as Keras 2's full-model file (``save_keras2_model``), Keras 3's legacy
  ``.h5`` and ``.keras``; ``probs_HxW`` are Keras' probabilities;
- ``photo_*.jpg`` and ``expected_preprocess.npz`` [``preprocess``]: crops of scikit-learn's
  sample photos at odd sizes and what torchvision's transforms, Keras' ``load_img`` +
  ``preprocess_input`` and TF-slim's ``preprocess_for_eval`` make of them.

Each V3/V4 fixture draws from its own generator (seeded from SEED and a fixed index), so any
subset can be made alone: ``--only NAME ...`` (``--list`` shows the names). The v1/v2 group
``v1v2`` shares one generator in a fixed order and is always made as a whole. With the pinned
versions (torch 2.14.1, torchvision 0.29.1, Keras 3.15.1 / TF 2.21, timm 1.0.31) re-running
reproduces the committed v1/v2 weight files bit for bit; Keras' float64 logits may differ in the
last bits (~1e-15) from run to run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

SIZES = [(64, 64), (67, 45), (45, 70)]
BATCH = 2
NUM_CLASSES = 10
SEED = 1234


def _waves(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """Noise over random plane waves, different per image and channel, so borders matter."""
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    freq = rng.uniform(0.05, 0.5, (n, 1, 1, 3, 2))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1, 3))
    waves = np.sin(freq[..., 0] * i[None, :, :, None] + freq[..., 1] * j[None, :, :, None] + phase)
    return (0.7 * waves + 0.3 * rng.uniform(-1, 1, (n, h, w, 3))).astype(np.float32)


def _inputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {f"{h}x{w}": _waves(rng, BATCH, h, w) for h, w in SIZES}


def _affine(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Random batch-norm gamma and beta."""
    return rng.uniform(0.5, 1.5, n).astype(np.float32), rng.normal(0.0, 0.2, n).astype(np.float32)


def _perturb(rng: np.random.Generator, mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, ...]:
    """Moving statistics near the calibrated ones, so activations stay alive but differ from
    batch statistics (a wrong eps or a swapped mean/variance shows)."""
    std = np.sqrt(var)
    mean = mean + rng.normal(0.0, 0.2, mean.shape) * std
    var = var * rng.uniform(0.6, 1.4, var.shape)
    return mean.astype(np.float32), var.astype(np.float32)


def _calibration_batch(rng: np.random.Generator) -> np.ndarray:
    return _waves(rng, 8, 96, 96)


def _calibrate_torch(torch, model, norms, rng: np.random.Generator, momentum: float) -> None:
    """One training-mode pass over a calibration batch stores its statistics (the norms'
    momentum must be 1), then each norm's statistics are perturbed (see :func:`_perturb`), its
    momentum set to ``momentum``, and the model put in eval mode. Call under ``torch.no_grad``."""
    model.train()
    model(torch.from_numpy(_calibration_batch(rng)).permute(0, 3, 1, 2))
    for module in norms:
        mean, var = _perturb(rng, module.running_mean.numpy(), module.running_var.numpy())
        module.running_mean.copy_(torch.from_numpy(mean))
        module.running_var.copy_(torch.from_numpy(var))
        module.momentum = momentum
        module.num_batches_tracked.fill_(1000)
    model.eval()


def make_torchvision(out: Path, rng: np.random.Generator) -> None:
    import torch
    import torchvision

    torch.manual_seed(SEED)
    model = torchvision.models.mobilenet_v2(width_mult=0.25, num_classes=NUM_CLASSES)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for module in norms:
            gamma, beta = _affine(rng, module.num_features)
            module.weight.copy_(torch.from_numpy(gamma))
            module.bias.copy_(torch.from_numpy(beta))
            module.momentum = 1.0  # the calibration pass stores the batch statistics
        model.classifier[1].bias.copy_(torch.from_numpy(rng.normal(0, 0.1, NUM_CLASSES)))
        _calibrate_torch(torch, model, norms, rng, momentum=0.1)
    torch.save(model.state_dict(), out / "torchvision_mobilenet_v2.pth")
    reference = model.double()
    arrays = {}
    with torch.no_grad():
        for key, x in _inputs(rng).items():
            logits = reference(torch.from_numpy(x.astype(np.float64)).permute(0, 3, 1, 2))
            arrays[f"x_{key}"] = x
            arrays[f"logits_{key}"] = logits.numpy()
    np.savez(out / "expected_torchvision_mobilenet_v2.npz", **arrays)


def _keras_randomise(model, rng: np.random.Generator) -> None:
    import keras

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in model.layers:
        if layer in norms:
            gamma, beta = _affine(rng, layer.gamma.shape[0])
            _, _, mean, var = layer.get_weights()
            layer.set_weights([gamma, beta, mean, var])
            layer.momentum = 0.0  # the calibration pass stores the batch statistics
        elif layer.name in ("conv_preds", "predictions") and len(layer.get_weights()) == 2:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape).astype(np.float32)])
    model(_calibration_batch(rng), training=True)
    for layer in norms:
        gamma, beta, mean, var = layer.get_weights()
        layer.set_weights([gamma, beta, *_perturb(rng, mean, var)])


def _keras2_weight_name(layer, weight) -> str:
    """The name Keras 2 gave a variable: 'layer/var:0' ('depthwise_kernel' for depthwise convs)."""
    import keras

    var = weight.path.split("/")[-1]
    if isinstance(layer, keras.layers.DepthwiseConv2D) and var == "kernel":
        var = "depthwise_kernel"
    return f"{layer.name}/{var}:0"


def save_keras2_weights(model, path: Path) -> None:
    """Mimic Keras 2's ``save_weights_to_hdf5_group`` (the layout of the downloaded weight files)."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([layer.name.encode("utf8") for layer in model.layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in sorted(model.layers, key=lambda layer: layer.name):
            group = f.create_group(layer.name)
            weights = list(layer.trainable_weights) + list(layer.non_trainable_weights)
            names = [_keras2_weight_name(layer, w).encode("utf8") for w in weights]
            group.attrs["weight_names"] = np.array(names) if names else np.array([])
            for name, weight in zip(names, weights):
                group.create_dataset(name.decode("utf8"), data=np.asarray(weight.numpy()))


def make_keras(out: Path, rng: np.random.Generator, arch: str) -> None:
    import keras

    build = {"mobilenet_v1": keras.applications.MobileNet,
             "mobilenet_v2": keras.applications.MobileNetV2}[arch]
    keras.utils.set_random_seed(SEED)
    options = dict(alpha=0.25, weights=None, classes=NUM_CLASSES, classifier_activation=None)
    model = build(input_shape=(96, 96, 3), **options)
    _keras_randomise(model, rng)
    save_keras2_weights(model, out / f"keras_{arch}.h5")
    model.save(out / f"keras_{arch}_keras3.h5")
    weights = model.get_weights()

    # Keras pads according to the static input size (MobileNetV2's correct_pad), so the reference
    # for each size is the model built at that size, in float64, with the same weights.
    keras.config.set_dtype_policy("float64")
    arrays = {}
    try:
        for key, x in _inputs(rng).items():
            h, w = x.shape[1:3]
            sized = build(input_shape=(h, w, 3), **options)
            sized.set_weights([v.astype(np.float64) for v in weights])
            arrays[f"x_{key}"] = x
            arrays[f"logits_{key}"] = np.asarray(sized(x.astype(np.float64), training=False))
    finally:
        keras.config.set_dtype_policy("float32")
    np.savez(out / f"expected_keras_{arch}.npz", **arrays)


def _torch_randomise(torch, model, rng: np.random.Generator, momentum: float) -> None:
    """Random batch-norm affine parameters, biases and (calibrated, then perturbed) moving
    statistics for a torch model; linear weights ~ N(0, 1/fan_in) so the head is not ~0."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                gamma, beta = _affine(rng, module.num_features)
                module.weight.copy_(torch.from_numpy(gamma))
                module.bias.copy_(torch.from_numpy(beta))
                module.momentum = 1.0  # the calibration pass stores the batch statistics
            elif isinstance(module, torch.nn.Linear):
                fan_in = module.weight.shape[1]
                module.weight.copy_(torch.from_numpy(
                    rng.normal(0, fan_in ** -0.5, tuple(module.weight.shape)).astype(np.float32)))
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and module.bias is not None:
                module.bias.copy_(torch.from_numpy(rng.normal(0, 0.1, module.bias.shape[0]).astype(np.float32)))
        _calibrate_torch(torch, model, norms, rng, momentum)


def _torch_expected(torch, model, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Float64 logits of (a float64 copy of) ``model`` for each size; inputs stored NHWC."""
    import copy

    reference = copy.deepcopy(model).double().eval()
    arrays = {}
    with torch.no_grad():
        for key, x in _inputs(rng).items():
            logits = reference(torch.from_numpy(x.astype(np.float64)).permute(0, 3, 1, 2))
            arrays[f"x_{key}"] = x
            arrays[f"logits_{key}"] = logits.numpy()
    return arrays


TORCHVISION_V3_WIDTHS = {"mobilenet_v3_large": 0.25, "mobilenet_v3_small": 0.35}


def make_torchvision_v3(out: Path, rng: np.random.Generator, arch: str) -> None:
    import torch
    import torchvision

    torch.manual_seed(SEED)
    build = getattr(torchvision.models, arch)
    model = build(width_mult=TORCHVISION_V3_WIDTHS[arch], num_classes=NUM_CLASSES)
    _torch_randomise(torch, model, rng, momentum=0.01)  # torchvision's v3 BatchNorm2d momentum
    torch.save(model.state_dict(), out / f"torchvision_{arch}.pth")
    np.savez(out / f"expected_torchvision_{arch}.npz", **_torch_expected(torch, model, rng))


TIMM_V4_MULTIPLIER = 0.25


def make_timm_v4(out: Path, rng: np.random.Generator) -> None:
    import torch
    from safetensors.torch import save_file
    from timm.models.mobilenetv3 import _gen_mobilenet_v4

    torch.manual_seed(SEED)
    # timm.create_model("mobilenetv4_conv_small", ...) hard-codes channel_multiplier=1.0 (passing
    # one raises "got multiple values"); _gen_mobilenet_v4 is the builder that entry point calls.
    model = _gen_mobilenet_v4("mobilenetv4_conv_small", channel_multiplier=TIMM_V4_MULTIPLIER,
                              pretrained=False, num_classes=NUM_CLASSES)
    _torch_randomise(torch, model, rng, momentum=0.1)  # timm's v4 uses nn.BatchNorm2d defaults
    state = model.state_dict()
    torch.save(state, out / "timm_mobilenet_v4_conv_small.pth")
    # One metadata entry only: safetensors writes a multi-key metadata map in hash order, which
    # would make the file differ from run to run.
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "timm_mobilenet_v4_conv_small.safetensors"),
              metadata={"format": "pt"})
    np.savez(out / "expected_timm_mobilenet_v4_conv_small.npz", **_torch_expected(torch, model, rng))


KERAS_V3 = {  # fixture arch -> (builder name, minimalistic, alpha)
    "mobilenet_v3_large": ("MobileNetV3Large", False, 0.15),
    "mobilenet_v3_small": ("MobileNetV3Small", False, 0.25),
    "mobilenet_v3_large_minimalistic": ("MobileNetV3Large", True, 0.15),
    "mobilenet_v3_small_minimalistic": ("MobileNetV3Small", True, 0.25),
}


def _pixels(x: np.ndarray) -> np.ndarray:
    """[-1, 1] -> [0, 255], the range Keras' MobileNetV3 expects with include_preprocessing."""
    return ((x + 1.0) * 127.5).clip(0.0, 255.0).astype(np.float32)


def _keras_v3_randomise(model, rng: np.random.Generator) -> None:
    """As _keras_randomise, for v3: every conv bias (SE convs, conv_2, logits) randomised too,
    calibration on pixels in [0, 255], and the batch-norm momentum restored afterwards."""
    import keras

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = {layer.name: layer.momentum for layer in norms}
    for layer in model.layers:
        if layer in norms:
            gamma, beta = _affine(rng, layer.gamma.shape[0])
            _, _, mean, var = layer.get_weights()
            layer.set_weights([gamma, beta, mean, var])
            layer.momentum = 0.0  # the calibration pass stores the batch statistics
        elif isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape).astype(np.float32)])
    model(_pixels(_calibration_batch(rng)), training=True)
    for layer in norms:
        gamma, beta, mean, var = layer.get_weights()
        layer.set_weights([gamma, beta, *_perturb(rng, mean, var)])
        layer.momentum = momenta[layer.name]


def make_keras_v3(out: Path, rng: np.random.Generator, arch: str) -> None:
    import keras

    name, minimalistic, alpha = KERAS_V3[arch]
    build = getattr(keras.applications, name)
    keras.backend.clear_session()  # fresh automatic layer names ("re_lu", "activation", ...)
    keras.utils.set_random_seed(SEED)
    options = dict(alpha=alpha, minimalistic=minimalistic, weights=None, classes=NUM_CLASSES,
                   classifier_activation=None, include_preprocessing=True)
    model = build(input_shape=(None, None, 3), **options)
    _keras_v3_randomise(model, rng)
    save_keras2_weights(model, out / f"keras_{arch}.h5")
    model.save(out / f"keras_{arch}_keras3.h5")
    if arch == "mobilenet_v3_small":
        model.save_weights(out / f"keras_{arch}.weights.h5")
        model.save(out / f"keras_{arch}.keras")
    weights = model.get_weights()

    # logits_*: the (None, None, 3) model itself (its correct_pad cannot see the size, so every
    # stride-2 depthwise pads (k//2 - 1, k//2)); logits_static_*: the model built at that size.
    keras.config.set_dtype_policy("float64")
    arrays = {}
    try:
        dynamic = build(input_shape=(None, None, 3), **options)
        dynamic.set_weights([v.astype(np.float64) for v in weights])
        for key, x in _inputs(rng).items():
            x = _pixels(x)
            h, w = x.shape[1:3]
            sized = build(input_shape=(h, w, 3), **options)
            sized.set_weights([v.astype(np.float64) for v in weights])
            arrays[f"x_{key}"] = x
            arrays[f"logits_{key}"] = np.asarray(dynamic(x.astype(np.float64), training=False))
            arrays[f"logits_static_{key}"] = np.asarray(sized(x.astype(np.float64), training=False))
    finally:
        keras.config.set_dtype_policy("float32")
    np.savez(out / f"expected_keras_{arch}.npz", **arrays)


# -- TF-slim checkpoints (tensor bundle V2) -------------------------------------------------

SLIM = {  # arch -> (scope, depth multiplier, classes, batch-norm scale, finegrain_classification_mode)
    # v1: TF-slim's mobilenet_v1_arg_scope (scale=True), an unusual multiplier, the 1001-class head
    "mobilenet_v1": ("MobilenetV1", 0.125, 1001, True, False),
    # v2: TF-slim's mobilenet.training_scope (slim.batch_norm's default scale=False: no gamma);
    # finegrain_classification_mode=False (slim's default) scales Conv_1 with the multiplier
    "mobilenet_v2": ("MobilenetV2", 0.25, 10, False, False),
}
SLIM_EPS = 1e-3
SLIM_V1_DEFS = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512), *[(1, 512)] * 5,
                (2, 1024), (1, 1024)]
SLIM_V2_DEFS = [(6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]


def _make_divisible(v: float, divisor: int = 8, min_value: int = 8) -> int:
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def slim_layers(arch: str) -> list[dict]:
    """The layers of TF-slim's ``mobilenet_v1`` / ``mobilenet_v2`` (``mobilenet_v1.py``,
    ``mobilenet/mobilenet_v2.py``) at the fixture's multiplier: scope, kind, kernel shape,
    stride, activation, residual input."""
    _, alpha, classes, _, finegrain = SLIM[arch]
    layers = []

    def conv(scope, k, s, cin, cout, act=True, kind="conv"):
        shape = (k, k, cin, 1) if kind == "depthwise" else (k, k, cin, cout)
        layers.append({"scope": scope, "kind": kind, "shape": shape, "stride": s, "relu6": act})
        return cin if kind == "depthwise" else cout

    if arch == "mobilenet_v1":
        depth = lambda d: max(int(d * alpha), 8)  # noqa: E731
        c = conv("Conv2d_0", 3, 2, 3, depth(32))
        for i, (s, d) in enumerate(SLIM_V1_DEFS, 1):
            conv(f"Conv2d_{i}_depthwise", 3, s, c, c, kind="depthwise")
            c = conv(f"Conv2d_{i}_pointwise", 1, 1, c, depth(d))
        layers.append({"scope": "AvgPool_1a", "kind": "slim_pool"})
    else:
        c = cin = conv("Conv", 3, 2, 3, _make_divisible(32 * alpha))
        conv("expanded_conv/depthwise", 3, 1, c, c, kind="depthwise")  # expansion 1: no expand
        c = conv("expanded_conv/project", 1, 1, c, _make_divisible(16 * alpha), act=False)
        if cin == c:  # expanded_conv's residual: stride 1 and equal depths
            layers[-1]["residual"] = "expanded_conv/depthwise"  # adds the block's input
        k = 1
        for t, ch, n, s in SLIM_V2_DEFS:
            for r in range(n):
                name, cin = f"expanded_conv_{k}", c
                e = conv(f"{name}/expand", 1, 1, c, _make_divisible(c * t))
                conv(f"{name}/depthwise", 3, s if r == 0 else 1, e, e, kind="depthwise")
                c = conv(f"{name}/project", 1, 1, e, _make_divisible(ch * alpha), act=False)
                if (s if r == 0 else 1) == 1 and cin == c:
                    layers[-1]["residual"] = f"{name}/expand"
                k += 1
        last = 1280 if finegrain and alpha < 1 else _make_divisible(1280 * alpha)
        c = conv("Conv_1", 1, 1, c, last)
        layers.append({"scope": "global_pool", "kind": "global_pool"})
    layers.append({"scope": "Logits/Conv2d_1c_1x1", "kind": "logits", "shape": (1, 1, c, classes)})
    return layers


def _slim_variables(arch: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random weights under slim's names (scope-relative), batch norms left for calibration."""
    _, _, _, scale, _ = SLIM[arch]
    params = {}
    for layer in slim_layers(arch):
        if "shape" not in layer:
            continue
        shape, scope = layer["shape"], layer["scope"]
        fan_in = shape[0] * shape[1] * (1 if layer["kind"] == "depthwise" else shape[2])
        weights = "depthwise_weights" if layer["kind"] == "depthwise" else "weights"
        params[f"{scope}/{weights}"] = rng.normal(0, fan_in ** -0.5, shape).astype(np.float32)
        if layer["kind"] == "logits":
            params[f"{scope}/biases"] = rng.normal(0, 0.1, shape[3]).astype(np.float32)
            continue
        channels = shape[2] if layer["kind"] == "depthwise" else shape[3]
        gamma, beta = _affine(rng, channels)
        if scale:
            params[f"{scope}/BatchNorm/gamma"] = gamma
        params[f"{scope}/BatchNorm/beta"] = beta
    return params


def slim_forward(tf, arch: str, params: dict, x, calibrate: dict | None = None):
    """TF-slim's forward in TF ops (eval-mode batch norm with the moving statistics; with
    ``calibrate`` a dict, batch statistics instead, stored into it)."""
    dtype = x.dtype
    value = lambda name: tf.constant(params[name], dtype)  # noqa: E731
    outputs, h = {}, x
    for layer in slim_layers(arch):
        scope, kind = layer["scope"], layer["kind"]
        if kind in ("conv", "depthwise"):
            s = [1, layer["stride"], layer["stride"], 1]
            if kind == "conv":
                y = tf.nn.conv2d(h, value(f"{scope}/weights"), s, "SAME")
            else:
                y = tf.nn.depthwise_conv2d(h, value(f"{scope}/depthwise_weights"), s, "SAME")
            if calibrate is not None:
                mean, var = tf.nn.moments(y, [0, 1, 2])
                calibrate[scope] = (mean.numpy(), var.numpy())
            else:
                mean, var = value(f"{scope}/BatchNorm/moving_mean"), value(f"{scope}/BatchNorm/moving_variance")
            gamma = value(f"{scope}/BatchNorm/gamma") if f"{scope}/BatchNorm/gamma" in params else None
            y = tf.nn.batch_normalization(y, mean, var, value(f"{scope}/BatchNorm/beta"), gamma, SLIM_EPS)
            if layer["relu6"]:
                y = tf.nn.relu6(y)
            if "residual" in layer:
                y = y + outputs[layer["residual"] + "/input"]
            outputs[scope + "/input"] = h
            h = y
        elif kind == "slim_pool":  # _reduced_kernel_size_for_small_input, VALID, stride 2
            kernel = [min(h.shape[1], 7), min(h.shape[2], 7)]
            h = tf.nn.avg_pool2d(h, kernel, 2, "VALID")
        elif kind == "global_pool":
            h = tf.reduce_mean(h, [1, 2], keepdims=True)
        else:
            h = tf.nn.conv2d(h, value(f"{scope}/weights"), 1, "SAME") + value(f"{scope}/biases")
            h = tf.squeeze(h, [1, 2])
    return h


def _slim_calibrate(tf, arch: str, params: dict, rng: np.random.Generator) -> None:
    """Moving statistics: the batch statistics of a calibration batch, perturbed."""
    stats = {}
    slim_forward(tf, arch, params, tf.constant(_calibration_batch(rng)), calibrate=stats)
    for scope, (mean, var) in stats.items():
        mean, var = _perturb(rng, mean, var)
        params[f"{scope}/BatchNorm/moving_mean"], params[f"{scope}/BatchNorm/moving_variance"] = mean, var


def save_tf1_checkpoint(tf, prefix: Path, scope: str, raw: dict, shadows: dict, step: int) -> None:
    """TF's own (TF1) Saver: slim's variable names, ExponentialMovingAverage shadows of every
    model variable (as slim's train_image_classifier keeps them), RMSProp slots of the trainable
    ones (after one real optimizer step) and global_step."""
    graph = tf.Graph()
    with graph.as_default():
        variables = {name: tf.compat.v1.get_variable(f"{scope}/{name}", initializer=value,
                                                     trainable="moving_" not in name)
                     for name, value in raw.items()}
        global_step = tf.compat.v1.train.get_or_create_global_step()
        ema = tf.compat.v1.train.ExponentialMovingAverage(0.9999)
        ema.apply(list(variables.values()))
        trainable = [v for name, v in variables.items() if "moving_" not in name]
        loss = tf.add_n([tf.reduce_sum(v * v) for v in trainable])
        optimizer = tf.compat.v1.train.RMSPropOptimizer(0.01, decay=0.9, momentum=0.9, epsilon=1.0)
        train = optimizer.minimize(loss, global_step=global_step, var_list=trainable)
        saver = tf.compat.v1.train.Saver(save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(train)
            for name, variable in variables.items():
                variable.load(raw[name], session)
                ema.average(variable).load(shadows[name], session)
            global_step.load(step, session)
            saver.save(session, str(prefix), global_step=global_step, write_meta_graph=False)


def make_tf_slim(out: Path, rng: np.random.Generator, arch: str) -> None:
    import tensorflow as tf

    scope = SLIM[arch][0]
    shadows = _slim_variables(arch, rng)  # the averaged weights: what eval restores and tests use
    _slim_calibrate(tf, arch, shadows, rng)
    raw = {}
    for name, value in shadows.items():  # the last step's weights: near the averages
        noisy = value * rng.uniform(0.8, 1.2, value.shape) + rng.normal(0, 0.02, value.shape)
        raw[name] = np.abs(noisy).astype(np.float32) if "moving_variance" in name else noisy.astype(np.float32)
    folder = out / f"tf_slim_{arch}"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    save_tf1_checkpoint(tf, folder / "model.ckpt", scope, raw, shadows, step=1000)
    arrays = {}
    for key, x in _inputs(rng).items():
        arrays[f"x_{key}"] = x
        arrays[f"logits_{key}"] = slim_forward(tf, arch, {k: v.astype(np.float64) for k, v in shadows.items()},
                                               tf.constant(x.astype(np.float64))).numpy()
        arrays[f"logits_raw_{key}"] = slim_forward(tf, arch, {k: v.astype(np.float64) for k, v in raw.items()},
                                                   tf.constant(x.astype(np.float64))).numpy()
    np.savez(out / f"expected_tf_slim_{arch}.npz", **arrays)


# -- Keras 3 native files, headless bases, transfer-learning models ------------------------

KERAS_APPS = {"mobilenet_v1": "MobileNet", "mobilenet_v2": "MobileNetV2",
              "mobilenet_v3_small": "MobileNetV3Small"}
KERAS_ALPHA = 0.25


def _keras_options(arch: str, **extra) -> dict:
    options = dict(alpha=KERAS_ALPHA, weights=None, **extra)
    if arch == "mobilenet_v3_small":
        options["include_preprocessing"] = True
    return options


def _keras_base_shape(arch: str, size=(96, 96)) -> tuple:
    """v1/v2 pad according to a static input size; v3 is built for any size (None, None)."""
    return (None, None, 3) if arch == "mobilenet_v3_small" else (*size, 3)


def _keras_model_inputs(arch: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {key: (_pixels(x) if arch == "mobilenet_v3_small" else x) for key, x in _inputs(rng).items()}


def _keras_float64(build, weights, sizes_inputs: dict, output=lambda y: y) -> dict[str, np.ndarray]:
    """For each input: ``build((h, w))`` in float64 with ``weights``, run in inference mode."""
    import keras

    keras.config.set_dtype_policy("float64")
    arrays = {}
    try:
        for key, x in sizes_inputs.items():
            model = build(x.shape[1:3])
            model.set_weights([v.astype(np.float64) for v in weights])
            arrays[f"x_{key}"] = x
            arrays[key] = output(np.asarray(model(x.astype(np.float64), training=False)))
    finally:
        keras.config.set_dtype_policy("float32")
    return arrays


def make_keras3_native(out: Path, rng: np.random.Generator, arch: str) -> None:
    """``keras_<arch>.keras`` (Keras 3's ``model.save``; its ``model.weights.h5`` member is the
    ``.weights.h5`` layout) with the top, 10 classes, logits."""
    import keras

    build = getattr(keras.applications, KERAS_APPS[arch])
    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    options = _keras_options(arch, classes=NUM_CLASSES, classifier_activation=None)
    model = build(input_shape=_keras_base_shape(arch), **options)
    _keras_randomise(model, rng)
    model.save(out / f"keras_{arch}.keras")
    arrays = _keras_float64(lambda hw: build(input_shape=_keras_base_shape(arch, hw), **options),
                            model.get_weights(), _keras_model_inputs(arch, rng))
    np.savez(out / f"expected_keras3_{arch}.npz",
             **{(k if k.startswith("x_") else f"logits_{k}"): v for k, v in arrays.items()})


KERAS_HEADLESS = {  # fixture -> (arch, pooling, how it is saved)
    "keras_mobilenet_v2_notop": ("mobilenet_v2", None, "keras2"),  # the downloaded *_no_top.h5
    "keras_mobilenet_v1_notop_avg": ("mobilenet_v1", "avg", "keras"),
}


def make_keras_headless(out: Path, rng: np.random.Generator, name: str) -> None:
    """``include_top=False`` bases: the features expected are globally averaged (what
    ``pooling="avg"`` returns; the mean of the map otherwise)."""
    import keras

    arch, pooling, how = KERAS_HEADLESS[name]
    build = getattr(keras.applications, KERAS_APPS[arch])
    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    options = _keras_options(arch, include_top=False, pooling=pooling)
    model = build(input_shape=_keras_base_shape(arch), **options)
    _keras_randomise(model, rng)
    if how == "keras2":
        save_keras2_weights(model, out / f"{name}.h5")
    else:
        model.save(out / f"{name}.keras")
    pooled = (lambda y: y) if pooling == "avg" else (lambda y: y.mean(axis=(1, 2)))
    arrays = _keras_float64(lambda hw: build(input_shape=_keras_base_shape(arch, hw), **options),
                            model.get_weights(), _keras_model_inputs(arch, rng), pooled)
    np.savez(out / f"expected_{name}.npz",
             **{(k if k.startswith("x_") else f"features_{k}"): v for k, v in arrays.items()})


TRANSFER_CLASSES = 5
KERAS_TRANSFER = {  # arch -> how its transfer-learning model is saved
    "mobilenet_v1": ("keras2", "keras"),
    "mobilenet_v2": ("keras2", "keras3_h5", "keras"),
    "mobilenet_v3_small": ("keras3_h5", "keras"),
}


def _transfer_model(keras, arch: str, size=(96, 96)):
    """The keras.io transfer-learning recipe: a keras.applications base nested as one layer, then
    GlobalAveragePooling2D, Dropout and Dense(5, softmax)."""
    build = getattr(keras.applications, KERAS_APPS[arch])
    base = build(input_shape=_keras_base_shape(arch, size), **_keras_options(arch, include_top=False))
    inputs = keras.Input(_keras_base_shape(arch, size))
    x = base(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(TRANSFER_CLASSES, activation="softmax")(x)
    return keras.Model(inputs, outputs), base


def save_keras2_model(model, path: Path) -> None:
    """Mimic Keras 2's ``model.save("x.h5")``: the model's JSON config as the root attribute
    ``model_config``, the weights under ``model_weights``; a nested model is one layer group
    whose ``weight_names`` are its variables' names (``Conv1/kernel:0``)."""
    import keras

    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = model.to_json().encode("utf8")
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.15.0"
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = np.array([layer.name.encode("utf8") for layer in model.layers])
        group.attrs["backend"] = b"tensorflow"
        group.attrs["keras_version"] = b"2.15.0"
        for layer in model.layers:
            inner = layer.layers if isinstance(layer, keras.Model) else [layer]
            pairs = [(_keras2_weight_name(sub, w), w) for sub in inner
                     for w in list(sub.trainable_weights) + list(sub.non_trainable_weights)]
            layer_group = group.create_group(layer.name)
            names = [name.encode("utf8") for name, _ in pairs]
            layer_group.attrs["weight_names"] = np.array(names) if names else np.array([])
            for name, weight in pairs:
                layer_group.create_dataset(name, data=np.asarray(weight.numpy()))


def make_keras_transfer(out: Path, rng: np.random.Generator, arch: str) -> None:
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    model, base = _transfer_model(keras, arch)
    (_keras_v3_randomise if arch == "mobilenet_v3_small" else _keras_randomise)(base, rng)
    # The classifier sees standardised features (folded into its kernel and bias), so the
    # probabilities are neither uniform nor saturated and differ from image to image.
    calibration = _calibration_batch(rng)
    if arch == "mobilenet_v3_small":
        calibration = _pixels(calibration)
    features = np.asarray(base(calibration, training=False)).mean(axis=(1, 2)).astype(np.float64)
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-3
    dense = model.layers[-1]
    kernel = rng.normal(0, 1.5 * features.shape[1] ** -0.5, dense.kernel.shape) / std[:, None]
    bias = rng.normal(0, 0.3, TRANSFER_CLASSES) - mean @ kernel
    dense.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    name = f"keras_transfer_{arch}"
    for how in KERAS_TRANSFER[arch]:
        if how == "keras2":
            save_keras2_model(model, out / f"{name}.h5")
        elif how == "keras3_h5":
            model.save(out / f"{name}_keras3.h5")
        else:
            model.save(out / f"{name}.keras")
    arrays = _keras_float64(lambda hw: _transfer_model(keras, arch, hw)[0], model.get_weights(),
                            _keras_model_inputs(arch, rng))
    np.savez(out / f"expected_{name}.npz",
             **{(k if k.startswith("x_") else f"probs_{k}"): v for k, v in arrays.items()})


# -- preprocessing: each source's own pipeline on photos of odd sizes -----------------------

PHOTOS = {"photo_333x251.jpg": ("china.jpg", (41, 87, 41 + 333, 87 + 251)),  # (left, top, right, bottom)
          "photo_251x389.jpg": ("flower.jpg", (150, 20, 150 + 251, 20 + 389))}


def _slim_preprocess_for_eval(tf, image, height=224, width=224, central_fraction=0.875):
    """TF-slim's ``inception_preprocessing.preprocess_for_eval`` (what slim's eval_image_classifier
    runs for MobileNet), verbatim in TF2 ops: convert_image_dtype, central_crop, the legacy
    (align_corners=False, no half-pixel centres) bilinear resize, then ``(x - 0.5) * 2``."""
    image = tf.image.convert_image_dtype(image, dtype=tf.float32)
    image = tf.image.central_crop(image, central_fraction=central_fraction)
    image = tf.expand_dims(image, 0)
    image = tf.compat.v1.image.resize_bilinear(image, [height, width], align_corners=False)
    image = tf.squeeze(image, [0])
    image = tf.subtract(image, 0.5)
    return tf.multiply(image, 2.0)


def make_preprocess(out: Path, rng: np.random.Generator) -> None:
    """Two JPEG photos of odd sizes (crops of scikit-learn's sample images) and what each
    source's pipeline makes of them, decoded by Pillow: torchvision's Resize(256) +
    CenterCrop(224) + ToTensor + Normalize; Keras' ``load_img(target_size=(224, 224))`` +
    ``img_to_array`` + ``mobilenet_v2.preprocess_input``; TF-slim's ``preprocess_for_eval``."""
    import keras
    import tensorflow as tf
    import torchvision.transforms as T
    from PIL import Image
    import sklearn.datasets  # the sample photos ship with scikit-learn

    images = Path(sklearn.datasets.__file__).parent / "images"
    torchvision_transform = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                                       T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    arrays = {}
    for name, (source, box) in PHOTOS.items():
        Image.open(images / source).crop(box).save(out / name, quality=90)
        with Image.open(out / name) as photo:
            image = photo.convert("RGB")
        key = name.removesuffix(".jpg")
        arrays[f"torchvision_{key}"] = torchvision_transform(image).permute(1, 2, 0).numpy()
        loaded = keras.utils.load_img(out / name, target_size=(224, 224))
        arrays[f"keras_{key}"] = keras.applications.mobilenet_v2.preprocess_input(
            keras.utils.img_to_array(loaded))
        arrays[f"slim_{key}"] = _slim_preprocess_for_eval(tf, tf.constant(np.asarray(image))).numpy()
    np.savez_compressed(out / "expected_preprocess.npz", **arrays)


def _make_v1v2(out: Path) -> None:
    rng = np.random.default_rng(SEED)  # one stream for the three, in this order
    make_torchvision(out, rng)
    make_keras(out, rng, "mobilenet_v1")
    make_keras(out, rng, "mobilenet_v2")


# name -> (maker, index of its own generator); the indices are fixed so each fixture's random
# numbers do not depend on which others are made.
FIXTURES = {
    "v1v2": (lambda out, rng: _make_v1v2(out), 0),
    "torchvision_mobilenet_v3_large": (lambda out, rng: make_torchvision_v3(out, rng, "mobilenet_v3_large"), 1),
    "torchvision_mobilenet_v3_small": (lambda out, rng: make_torchvision_v3(out, rng, "mobilenet_v3_small"), 2),
    "keras_mobilenet_v3_large": (lambda out, rng: make_keras_v3(out, rng, "mobilenet_v3_large"), 3),
    "keras_mobilenet_v3_small": (lambda out, rng: make_keras_v3(out, rng, "mobilenet_v3_small"), 4),
    "keras_mobilenet_v3_large_minimalistic":
        (lambda out, rng: make_keras_v3(out, rng, "mobilenet_v3_large_minimalistic"), 5),
    "keras_mobilenet_v3_small_minimalistic":
        (lambda out, rng: make_keras_v3(out, rng, "mobilenet_v3_small_minimalistic"), 6),
    "timm_mobilenet_v4_conv_small": (lambda out, rng: make_timm_v4(out, rng), 7),
    "tf_slim_mobilenet_v1": (lambda out, rng: make_tf_slim(out, rng, "mobilenet_v1"), 8),
    "tf_slim_mobilenet_v2": (lambda out, rng: make_tf_slim(out, rng, "mobilenet_v2"), 9),
    "keras3_mobilenet_v1": (lambda out, rng: make_keras3_native(out, rng, "mobilenet_v1"), 10),
    "keras3_mobilenet_v2": (lambda out, rng: make_keras3_native(out, rng, "mobilenet_v2"), 11),
    "keras_mobilenet_v2_notop": (lambda out, rng: make_keras_headless(out, rng, "keras_mobilenet_v2_notop"), 12),
    "keras_mobilenet_v1_notop_avg":
        (lambda out, rng: make_keras_headless(out, rng, "keras_mobilenet_v1_notop_avg"), 13),
    "keras_transfer_mobilenet_v1": (lambda out, rng: make_keras_transfer(out, rng, "mobilenet_v1"), 14),
    "keras_transfer_mobilenet_v2": (lambda out, rng: make_keras_transfer(out, rng, "mobilenet_v2"), 15),
    "keras_transfer_mobilenet_v3_small":
        (lambda out, rng: make_keras_transfer(out, rng, "mobilenet_v3_small"), 16),
    "preprocess": (lambda out, rng: make_preprocess(out, rng), 17),
}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Write the conversion-test fixtures.")
    parser.add_argument("outdir", nargs="?", type=Path,
                        default=Path(__file__).resolve().parents[1] / "tests" / "fixtures")
    parser.add_argument("--only", nargs="+", choices=sorted(FIXTURES), metavar="NAME",
                        help="make only these (default: all)")
    parser.add_argument("--list", action="store_true", help="print the fixture names and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(FIXTURES))
        return 0
    # The torch side first: importing timm after TensorFlow crashes the interpreter (segfault).
    import torch  # noqa: F401
    import torchvision  # noqa: F401
    if args.only is None or "timm_mobilenet_v4_conv_small" in args.only:
        import timm  # noqa: F401

    out = args.outdir
    out.mkdir(parents=True, exist_ok=True)
    for name, (make, index) in FIXTURES.items():
        if args.only is None or name in args.only:
            make(out, np.random.default_rng([SEED, index]))
    for path in sorted(out.iterdir()):
        print(f"{path.stat().st_size:>9}  {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
