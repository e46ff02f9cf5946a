"""Trainer behaviour: exact resume, transfer learning with a frozen backbone, divergence stop,
unreadable images, and the data pipeline's determinism."""

import json
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from npmobilenet import build_model, load, save
from npmobilenet.data import EvalTransform, ImageFolder, Loader, TrainTransform, digits, stratified_split
from npmobilenet.train import (ArrayLoader, TrainConfig, Trainer, TrainingDiverged, cache_features,
                               evaluate, pool_endpoint, replace_head)

SIZE = 32
PRESET = {"name": "test", "resize": SIZE, "crop": SIZE, "mean": [0.5] * 3, "std": [0.5] * 3}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An image folder of handwritten fives, sixes and sevens (16 PNGs each, 40x40)."""
    root = tmp_path_factory.mktemp("images")
    data = digits(40)
    for name in ("five", "six", "seven"):
        (root / name).mkdir()
    for label, name in ((5, "five"), (6, "six"), (7, "seven")):
        for i, index in enumerate(np.flatnonzero(data.labels() == label)[:16]):
            Image.fromarray(data.images[index]).save(root / name / f"{i}.png")
    return root


def small_model(num_classes=3, seed=0):
    return build_model("mobilenet_v1", depth_multiplier=0.25, input_size=SIZE, num_classes=num_classes,
                       global_pool=True, bn_momentum=0.1, seed=seed)


def loaders(folder, seed=0):
    data = ImageFolder(folder)
    train = Loader(data, TrainTransform(PRESET, scale=(0.6, 1.0)), batch_size=8, shuffle=True, seed=seed)
    return train, Loader(data, EvalTransform(PRESET), batch_size=8)


def test_two_epochs_equal_one_epoch_then_resume_then_one(folder, tmp_path):
    config = TrainConfig(epochs=2, lr=0.02, ema_decay=0.99, seed=0)
    straight = small_model()
    uninterrupted = Trainer(straight, *loaders(folder), tmp_path / "straight", config, progress=False,
                            report=False)
    uninterrupted.fit()

    first = small_model()
    interrupted = Trainer(first, *loaders(folder), tmp_path / "resumed", config, progress=False, report=False)
    interrupted.fit(stop_after=1)
    averages_after_1 = {k: v.copy() for k, v in interrupted.ema.shadow.items()}
    shutil.copytree(tmp_path / "resumed", tmp_path / "resumed-epoch-1")
    # A new process: fresh model and trainer, resumed from last.safetensors, asked for 2 epochs.
    # Data order, augmentation, dropout, optimizer and schedule all resume: bit-identical weights.
    resumed = small_model(seed=123)
    trainer = Trainer(resumed, *loaders(folder), tmp_path / "resumed", config, progress=False, report=False)
    trainer.resume()
    assert trainer.start_epoch == 1
    trainer.fit()
    a, b = straight.state_dict(), resumed.state_dict()
    for name in a:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)
    for name, average in uninterrupted.ema.shadow.items():  # the weight averages resumed too
        np.testing.assert_array_equal(trainer.ema.shadow[name], average, err_msg=name)
        assert not np.allclose(average, a[name])
    # Epoch 1 is always the best so far: its best.safetensors holds the averages, last the raw weights.
    best = load(tmp_path / "resumed-epoch-1" / "best.safetensors").state_dict()
    last = load(tmp_path / "resumed-epoch-1" / "last.safetensors").state_dict()
    for name, average in averages_after_1.items():
        np.testing.assert_array_equal(best[name], average, err_msg=name)
        assert not np.array_equal(last[name], average)
    assert len(trainer.history.epochs) == 2
    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics] == [1, 2]


def test_head_training_keeps_the_backbone_bit_identical_and_learns(folder, tmp_path):
    # Pretraining on other classes (digits 0-4), as ImageNet weights would be.
    others = digits(SIZE)
    others = others.subset(np.flatnonzero(others.labels() < 5)[:400])
    pretrained = small_model(num_classes=5)
    Trainer(pretrained, Loader(others, EvalTransform(PRESET), 16, shuffle=True),
            Loader(others.subset(range(32)), EvalTransform(PRESET), 16), tmp_path / "pretraining",
            TrainConfig(epochs=3, lr=0.05), progress=False, report=False).fit()
    save(pretrained, tmp_path / "pretrained.safetensors")
    val = Loader(ImageFolder(folder), EvalTransform(PRESET), batch_size=8)
    train = Loader(ImageFolder(folder), EvalTransform(PRESET), batch_size=8, shuffle=True)
    model = replace_head(load(tmp_path / "pretrained.safetensors"), 3, seed=1).freeze(trainable=("Logits",))
    before = model.state_dict()
    start = evaluate(model, val, 3)["loss"]
    Trainer(model, train, val, tmp_path / "head", TrainConfig(epochs=8, lr=0.01, optimizer="adam"),
            progress=False, report=False).fit()
    after = model.state_dict()
    for name, value in before.items():
        if not name.startswith("Logits/"):
            np.testing.assert_array_equal(after[name], value, err_msg=name)  # weights and BN statistics
    assert not np.array_equal(after["Logits/weights"], before["Logits/weights"])
    assert evaluate(model, val, 3)["loss"] < 0.7 * start


def test_cached_features_give_the_same_logits_as_the_full_model(folder):
    model = small_model().freeze()
    _, val = loaders(folder)
    endpoint = pool_endpoint(model)
    features, labels = cache_features(model, val, endpoint)
    model.eval()
    x, y = next(val.epoch(0))
    np.testing.assert_allclose(model.forward_from(endpoint, features[:len(y)]).data, model(x).data,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels[:len(y)], y)
    cached = ArrayLoader(features, labels, 5)
    assert sum(len(y) for _, y in cached.epoch(0)) == len(labels) == 48 and len(cached) == 10


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")  # the point of the test
def test_divergence_stops_and_keeps_the_last_good_checkpoint(folder, tmp_path):
    model = small_model()
    trainer = Trainer(model, *loaders(folder), tmp_path, TrainConfig(epochs=1, lr=0.01), progress=False,
                      report=False)
    trainer.fit()
    good = (tmp_path / "last.safetensors").read_bytes()
    trainer = Trainer(model, *loaders(folder), tmp_path, TrainConfig(epochs=2, lr=1e30), progress=False,
                      report=False)
    trainer.resume()
    with pytest.raises(TrainingDiverged, match=r"the loss became (nan|inf) at epoch 2.*last good checkpoint"):
        trainer.fit()
    assert (tmp_path / "last.safetensors").read_bytes() == good


def test_unreadable_images_are_skipped_and_counted(folder, tmp_path):
    root = tmp_path / "data"
    for name in ("five", "six"):
        (root / name).mkdir(parents=True)
        for path in sorted((folder / name).iterdir())[:3]:  # 6 good images
            (root / name / path.name).write_bytes(path.read_bytes())
    (root / "six" / "broken.png").write_bytes(b"not a png")
    whole = (root / "five" / "0.png").read_bytes()
    (root / "five" / "truncated.png").write_bytes(whole[:len(whole) // 2])
    loader = Loader(ImageFolder(root), EvalTransform(PRESET), batch_size=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(loader.epoch(0))
    assert sum(len(y) for _, y in batches) == 6 and loader.skipped == 2
    assert any("broken.png" in str(w.message) for w in caught)
    assert any("truncated.png" in str(w.message) for w in caught)


def test_batches_are_float32_nhwc_and_seeded(folder):
    train, _ = loaders(folder, seed=5)
    x, y = next(train.epoch(3))
    assert x.dtype == np.float32 and x.shape == (8, SIZE, SIZE, 3) and y.dtype == np.int64
    again, _ = loaders(folder, seed=5)
    np.testing.assert_array_equal(next(again.epoch(3))[0], x)
    assert not np.array_equal(next(train.epoch(4))[1], y) or not np.array_equal(next(train.epoch(4))[0], x)


def test_stratified_split_holds_out_every_class():
    labels = np.repeat(np.arange(4), 10)
    train, held = stratified_split(labels, 0.2, seed=0)
    assert len(held) == 8 and set(labels[held]) == {0, 1, 2, 3}
    assert not set(train) & set(held)
