"""The Dask engine of batch inference (``--workers N``, ``--scheduler ADDRESS``).

``dask.distributed`` is imported here only, when a command asks for a cluster: the
single-process default never needs it, and without the ``cluster`` extra the request fails with
one line saying what to install.

``--workers N`` starts a local cluster of N worker processes of one task thread each. The Numba,
OpenMP and BLAS pools of each get ``cores // N`` threads, so the workers share the cores instead
of oversubscribing them, and their allocator keeps freed memory for the next batch
(:func:`npmobilenet.runtime.reuse_freed_memory`, as the command line does for itself).
``--scheduler`` joins an existing cluster, whose workers must see the model file and the images
at the same paths.

Shards are submitted at once, earlier shards first (their priority), and come back as they
finish; the model is loaded by each worker once (:func:`npmobilenet.batch.cached_model`).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

from .runtime import reuse_freed_memory

INSTALL = 'pip install "npmobilenet[cluster]"'
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _distributed():
    try:
        import dask.distributed
    except ImportError:
        raise RuntimeError(f"--workers and --scheduler run on Dask, which is not installed: "
                           f"{INSTALL}") from None
    return dask.distributed


@contextmanager
def connect(workers: int | None = None, scheduler: str | None = None):
    """A :class:`Dask` engine on a new local cluster of ``workers`` processes, or on the cluster
    whose scheduler listens at ``scheduler``; closed (the local cluster stopped) on exit."""
    distributed = _distributed()
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as error:
            raise ValueError(f"--scheduler {scheduler}: cannot connect ({error})") from None
        with client:
            yield Dask(client, distributed)
        return
    threads = dict.fromkeys(THREAD_VARIABLES, str(max(1, (os.cpu_count() or 1) // workers)))
    with _spawn_environ(threads):
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.ERROR)
    with cluster, distributed.Client(cluster) as client:
        client.run(reuse_freed_memory)  # these processes are ours, as the command line's own
        yield Dask(client, distributed)


@contextmanager
def _spawn_environ(values: dict[str, str]):
    """``os.environ`` with ``values`` while the block starts worker processes, then as it was.

    The workers inherit it when they are spawned; Dask's ``env`` option would come too late
    (a worker imports numpy, whose OpenBLAS reads its thread count once, before applying it),
    and its nanny writes its own defaults (one BLAS thread) into this process's environment."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class Dask:
    """Runs shard functions as Dask tasks (same interface as :class:`npmobilenet.batch.InProcess`)."""

    def __init__(self, client, distributed):
        self.client, self.distributed = client, distributed

    def share(self, value):
        """``value`` sent to every worker once; tasks given the returned future receive it."""
        return self.client.scatter(value, broadcast=True)

    def map(self, function, items):
        """``(k, function(*args))`` for each ``(k, args)`` of ``items``, as the tasks finish."""
        futures = {self.client.submit(function, *args, priority=-k, pure=False): k for k, args in items}
        for future in self.distributed.as_completed(futures):
            k = futures.pop(future)
            yield k, future.result()
            future.release()
