"""Data-parallel training over MPI: the communicator, bucketed gradient averaging, batch shares
and synchronised batch-norm statistics.

Each of N processes (``mpiexec -n N``) takes a contiguous share of every global batch
(:func:`share`), computes the gradient of its rows' part of the global-batch mean loss, and the
processes sum those gradients with ``Allreduce`` on a few flat buffers (:class:`GradientBuckets`),
so every process holds the gradient one process would compute on the whole batch and takes the
same optimizer step. :class:`SyncBatchNorm` makes batch norm normalise with the statistics of
the global batch, so the forward pass, its gradient and the moving statistics are those of one
process too. Random choices need nothing here: shuffling, augmentation and dropout are keyed
by (seed, epoch, sample index), which a process knows for its own rows.

``mpi4py`` (the ``mpi`` extra) is imported only by :func:`world`; a :class:`Communicator`
without MPI is the single process, whose collectives return their input.
"""

from __future__ import annotations

import builtins
from functools import cache

import numpy as np

MPI_EXTRA = 'pip install "npmobilenet[mpi]"'
BUCKET_BYTES = 25 * 2**20  # gradient bytes per Allreduce, as torch's DistributedDataParallel


class MissingExtra(RuntimeError):
    """An optional dependency is not installed; the message names the pip command."""


@cache
def world() -> "Communicator":
    """All processes of the run (``MPI.COMM_WORLD``, one wrapper for the whole program); one
    process when not under ``mpiexec``."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise MissingExtra(f"distributed training needs mpi4py and an MPI library: {MPI_EXTRA}") from None
    return Communicator(MPI.COMM_WORLD)


def share(count: int, rank: int, size: int) -> slice:
    """The rows of a batch of ``count`` that process ``rank`` of ``size`` takes: contiguous, in
    rank order, sizes differing by at most one (the first ``count % size`` take one more)."""
    base, extra = divmod(count, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


class Communicator:
    """The processes of a run: ``rank`` of ``size``. Wraps an mpi4py communicator, or None for
    a single process (every collective then returns its input unchanged, at no cost)."""

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()
        self.agreed: BaseException | None = None  # the last error raised on every process alike

    @property
    def root(self) -> bool:
        """Whether this is process 0, the one that writes files and reports."""
        return self.rank == 0

    def sum(self, array: np.ndarray) -> np.ndarray:
        """``array`` summed over the processes, in place (a contiguous float or int array)."""
        if self.size > 1:
            from mpi4py import MPI
            self.comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
        return array

    def gather(self, array: np.ndarray) -> np.ndarray:
        """Every process's ``array`` stacked in rank order: (size, *array.shape)."""
        out = np.empty((self.size, *array.shape), array.dtype)
        if self.size > 1:
            self.comm.Allgather(np.ascontiguousarray(array), out)
        else:
            out[0] = array
        return out

    def barrier(self) -> None:
        if self.size > 1:
            self.comm.Barrier()

    def agree(self, action):
        """Run ``action()`` here and return its result, unless it failed on some process: then
        every process raises the first failing process's error (``agreed`` holds it), so none is
        left waiting in a collective. ``action`` must not communicate."""
        try:
            result, error = action(), None
        except Exception as caught:  # noqa: BLE001 -- handed to every process, then raised
            result, error = None, caught
        if self.size > 1:
            described = self.comm.allgather(None if error is None else _describe(error))
            first = next((d for d in described if d is not None), None)
            error = error or (None if first is None else _rebuild(*first))
        if error is not None:
            self.agreed = error
            raise error
        return result

    def fail(self, error: BaseException):
        """Raise ``error``, which every process raises at this point alike (after a collective
        that told them all)."""
        self.agreed = error
        raise error

    def abort(self, code: int) -> None:
        """End every process of the run (an error only this process met)."""
        if self.size > 1:
            self.comm.Abort(code)


def _describe(error: BaseException) -> tuple[str, str]:
    """What another process needs to raise ``error`` too: the name of its nearest built-in
    exception class and its message (plain strings: nothing of the object itself travels)."""
    builtin = next(kind for kind in type(error).__mro__ if kind.__module__ == "builtins")
    return builtin.__name__, str(error)


def _rebuild(name: str, message: str) -> Exception:
    """The error another process described: the built-in exception class of that name (the
    command line's message and exit code follow it), else a RuntimeError with the message."""
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        return kind(message)
    return RuntimeError(message)


class GradientBuckets:
    """Sums the gradients of ``params`` over the processes with one ``Allreduce`` per bucket of
    about ``bucket_bytes``: each bucket is one preallocated flat buffer the gradients are copied
    into and out of (fewer, larger messages cost less latency than one per parameter)."""

    def __init__(self, params, comm: Communicator, bucket_bytes: int = BUCKET_BYTES):
        self.comm, self.buckets = comm, []
        group, used = [], 0
        for p in params:
            group.append(p)
            used += p.data.nbytes
            if used >= bucket_bytes:
                self.buckets.append(group)
                group, used = [], 0
        if group:
            self.buckets.append(group)
        self.buffers = [np.empty(sum(p.data.size for p in group), group[0].data.dtype)
                        for group in self.buckets]

    def sum(self) -> None:
        """Replace every parameter's gradient by its sum over the processes (a missing
        gradient counts as zero)."""
        if self.comm.size == 1:
            return
        for group, buffer in zip(self.buckets, self.buffers):
            at = 0
            for p in group:
                size = p.data.size
                buffer[at:at + size] = 0 if p.grad is None else p.grad.reshape(-1)
                at += size
            self.comm.sum(buffer)
            at = 0
            for p in group:
                p.grad = buffer[at:at + p.data.size].reshape(p.data.shape).copy()
                at += p.data.size


class SyncBatchNorm:
    """The reduction batch norm calls in training mode to use the global batch's statistics
    (install it with :func:`npmobilenet.ops.norm.synchronised`).

    ``moments`` combines every process's count, mean and biased variance exactly (Chan et al.'s
    pairwise formula, in rank order, so every process gets the same bits); ``sum`` adds the
    backward pass's per-channel sums. All in float64.
    """

    def __init__(self, comm: Communicator):
        self.comm = comm

    def moments(self, count: int, mean: np.ndarray, var: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        """(global count, mean, biased variance) from this process's."""
        parts = self.comm.gather(np.concatenate([[count], mean, var]))
        counts, means, variances = parts[:, 0], parts[:, 1:1 + len(mean)], parts[:, 1 + len(mean):]
        total = counts.sum()
        global_mean = (counts[:, None] * means).sum(axis=0) / total
        spread = (counts[:, None] * (variances + (means - global_mean) ** 2)).sum(axis=0) / total
        return int(total), global_mean, spread

    def sum(self, *arrays: np.ndarray) -> list[np.ndarray]:
        """Each float64 array summed over the processes (one Allreduce for all)."""
        flat = self.comm.sum(np.concatenate(arrays))
        return np.split(flat, np.cumsum([len(a) for a in arrays])[:-1])
