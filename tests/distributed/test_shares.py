"""What data-parallel training rests on, checked in one process (no MPI needed): batch shares
cover every batch once, in order; a loader's shares are its batches cut up; a sample's dropout
mask depends on its key alone; per-process batch statistics combine into the whole batch's;
and a missing ``mpi`` extra is one line naming the pip command."""

import subprocess
import sys

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from npmobilenet import functional as F
from npmobilenet.data import EvalTransform, Loader
from npmobilenet.distributed import Communicator, SyncBatchNorm, share
from npmobilenet.kernels.batchnorm import batch_statistics

from .tiny import PRESET, images


@given(count=st.integers(0, 300), size=st.integers(1, 40))
def test_shares_cover_the_batch_once_in_order_and_differ_by_at_most_one(count, size):
    parts = [share(count, rank, size) for rank in range(size)]
    assert np.array_equal(np.concatenate([np.arange(count)[p] for p in parts]), np.arange(count))
    lengths = [p.stop - p.start for p in parts]
    assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)


def test_a_loaders_shares_are_its_batches_cut_up():
    loader = Loader(images(22, 0), EvalTransform(PRESET), 7, shuffle=True, seed=4, workers=1)
    whole = list(loader.batches(2))
    shares = [list(loader.batches(2, rank, 3)) for rank in range(3)]
    assert [len(i) for i, _, _ in whole] == [7, 7, 8]  # the final batch of 1 joined the one before
    for step, (indices, x, y) in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([s[step][0] for s in shares]), indices)
        np.testing.assert_array_equal(np.concatenate([s[step][1] for s in shares]), x)
        np.testing.assert_array_equal(np.concatenate([s[step][2] for s in shares]), y)
    np.testing.assert_array_equal(np.concatenate([i for i, _, _ in whole]), loader.order(2))


def test_a_rows_dropout_mask_depends_on_its_key_alone():
    x = np.ones((4, 6, 5), np.float32)
    keys = [[0, 1, index, 7] for index in (10, 11, 12, 13)]
    together = F.dropout(x, 0.5, keys=keys).data
    apart = np.concatenate([F.dropout(x[:2], 0.5, keys=keys[:2]).data, F.dropout(x[2:], 0.5, keys=keys[2:]).data])
    np.testing.assert_array_equal(together, apart)
    assert set(np.unique(together)) == {0.0, 2.0} and not np.array_equal(together[0], together[1])


class Gathered(Communicator):
    """Stands in for processes whose statistics are already known: ``gather`` returns them."""

    def __init__(self, parts):
        super().__init__()
        self.parts = parts

    def gather(self, array):
        return np.stack(self.parts)


def test_per_process_statistics_combine_into_the_whole_batchs():
    x = np.random.default_rng(0).normal(3.0, 2.0, (29, 5))
    parts = []
    for rows in np.split(x, [15, 22]):
        mean, var = batch_statistics(rows)
        parts.append(np.concatenate([[len(rows)], mean, var]))
    count, mean, var = SyncBatchNorm(Gathered(parts)).moments(0, np.zeros(5), np.zeros(5))
    assert count == 29
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(var, x.var(axis=0), rtol=1e-13)


def test_distributed_without_the_mpi_extra_is_one_line_naming_it(tmp_path):
    code = ("import sys; sys.modules['mpi4py'] = None; from npmobilenet.cli import main; "
            f"sys.exit(main(['train', '--data', 'builtin:digits', '--out', {str(tmp_path)!r}, '--distributed']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr == ('npmobilenet: error: distributed training needs mpi4py and an MPI library: '
                             'pip install "npmobilenet[mpi]"\n')
    usage = subprocess.run([sys.executable, "-m", "npmobilenet.cli", "train", "--data", "builtin:digits",
                            "--sync-bn"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "--sync-bn needs --distributed" in usage.stderr
