"""The small run the data-parallel tests train: a quarter-width MobileNet v1 at 48 pixels with
dropout 0.5, 10 classes, 38 generated training images in batches of 15 (15, 15, 8: shares of 8
and 7, then 4 and 4 on two processes), augmented; 12 validation images in batches of 5.

48 pixels, not 32: the last batch norms then see 2x2 values per image. At 1x1, with a handful
of images, their statistics are so ill-conditioned that rounding alone (the reference kernels
against the fast ones, in one process) moves float64 gradients by ~1e-10 relative."""

import numpy as np

from npmobilenet import build_model
from npmobilenet.data import ArrayImages, EvalTransform, Loader, TrainTransform
from npmobilenet.train import TrainConfig, Trainer

SIZE, CLASSES, BATCH = 48, 10, 15
PRESET = {"name": "tiny", "resize": SIZE, "crop": SIZE, "mean": [0.5] * 3, "std": [0.5] * 3}


def images(count: int, seed: int) -> ArrayImages:
    rng = np.random.default_rng(seed)
    return ArrayImages(rng.integers(0, 256, (count, 40, 40, 3), np.uint8), np.arange(count) % CLASSES,
                       {str(c): c for c in range(CLASSES)})


def trainer(out, dtype=np.float64, epochs: int = 2, **options) -> Trainer:
    """A trainer of the tiny run (``options``: distributed, sync_bn) writing into ``out``."""
    model = build_model("mobilenet_v1", depth_multiplier=0.25, input_size=SIZE, num_classes=CLASSES,
                        global_pool=True, dropout=0.5, dtype=dtype, seed=0)
    train = Loader(images(38, 1), TrainTransform(PRESET, scale=(0.5, 1.0)), BATCH, shuffle=True, seed=0,
                   workers=1)
    val = Loader(images(12, 2), EvalTransform(PRESET), 5, workers=1)
    config = TrainConfig(epochs=epochs, lr=0.02, label_smoothing=0.1, clip_norm=5.0, ema_decay=0.9, seed=0)
    return Trainer(model, train, val, out, config, forward=lambda x: model(x.astype(dtype)), progress=False,
                   report=False, **options)
