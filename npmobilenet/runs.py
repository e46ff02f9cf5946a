"""Run folders: one writer at a time, no run clobbered by accident, a run resumed only as itself.

A training run writes into one folder (``train --out``). :class:`RunFolder` guards it:

- ``.lock`` names the writing process (pid and host). It is created atomically
  (``O_CREAT | O_EXCL``) and removed when the writer finishes, so a second writer is refused,
  naming the first. A lock whose process died on this host (``kill -9``, a crash) is taken over
  with a notice on stderr; one from another host cannot be checked from here and is refused.
- Once the lock is held, temporary files an interrupted write left behind (``.NAME.*.tmp``,
  the pattern of :meth:`RunFolder.write_text` and of model files' atomic saves) are removed.
- :meth:`RunFolder.claim` refuses to start a new run in a folder that holds one, unless the run
  is resumed or explicitly overwritten (which removes that run's files, and nothing else).

:func:`run_settings` and :func:`compare_settings` judge a resume: the settings that fix what the
saved state means (architecture, build options, classes, frozen layers, optimizer, weight
averaging on or off, seed) must not change; the others (epochs, learning rate, ...) may.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from . import validate
from .architecture import load_spec

LAST, BEST, CONFIG = "last.safetensors", "best.safetensors", "config.json"
LOCK, SAMPLES = ".lock", "samples"
# The files (and the folder SAMPLES) a run writes; LAST, BEST or CONFIG present means a run.
RUN_FILES = (LAST, BEST, CONFIG, "metrics.csv", "metrics.json", "curves.png",
             "class_indices.json", "labels.txt")
# Hyper-parameters a resumed run may change; every other setting is fixed for the run's life.
CHANGEABLE = ("epochs", "lr", "momentum", "weight_decay", "schedule", "warmup_epochs",
              "label_smoothing", "clip_norm", "ema_decay")


class RunFolderBusy(RuntimeError):
    """Another process holds the run folder's lock."""


class RunFolder:
    """The output folder of one training run; see the module docstring.

    ``with folder.lock():`` holds the lock for the block (re-entrant for this object). Writes
    happen under the lock: :meth:`claim` once, then :meth:`write_text` and checkpoints.
    """

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        self.claimed = False
        self._depth = 0  # nesting of lock() blocks
        self._owner: dict | None = None

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK

    @contextmanager
    def lock(self):
        if self._depth == 0:
            self._acquire()
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._release()

    def _acquire(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        with _serialised(self.path):
            while True:
                try:
                    fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    break
                except FileExistsError:
                    self._take_over_if_stale()
            with os.fdopen(fd, "w", encoding="utf8") as handle:
                handle.write(json.dumps(me))
        self._owner = me
        for leftover in self.path.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)

    def _take_over_if_stale(self) -> None:
        """Remove a lock whose owner died on this host (with a notice); else raise RunFolderBusy."""
        owner = self._read_lock()
        if owner is None:  # released in the meantime
            return
        pid, host = owner["pid"], owner["host"]
        if host != socket.gethostname():
            raise RunFolderBusy(f"{self.path} is in use by process {pid} on host {host} (lock file "
                                f"{self.lock_path}); if that run has ended, delete the lock file")
        if _alive(pid):
            raise RunFolderBusy(f"{self.path} is in use by process {pid} on {host} (lock file "
                                f"{self.lock_path}); wait for it to finish or choose another --out")
        print(f"npmobilenet: taking over {self.lock_path}: its owner, process {pid} on {host}, "
              f"is no longer running", file=sys.stderr, flush=True)
        self.lock_path.unlink(missing_ok=True)

    def _read_lock(self) -> dict | None:
        """The lock's owner ``{"pid", "host"}``, or None when there is no lock."""
        try:
            text = self.lock_path.read_text(encoding="utf8")
        except FileNotFoundError:
            return None
        try:
            owner = json.loads(text)
            validate.integer("pid", owner["pid"], 1)
            if not isinstance(owner["host"], str):
                raise TypeError
        except (ValueError, TypeError, KeyError):
            raise RunFolderBusy(f"{self.lock_path} does not name its owner (corrupt?); if no run "
                                f"is writing {self.path}, delete it") from None
        return owner

    def _release(self) -> None:
        try:
            if self._read_lock() == self._owner:
                self.lock_path.unlink()
        except RunFolderBusy:  # someone replaced the lock with garbage: not ours to remove
            pass
        self._owner = None

    def claim(self, resume: bool = False, overwrite: bool = False) -> None:
        """Take the folder for this run (under the lock; once per object): a folder holding
        another run is refused unless ``resume`` continues it or ``overwrite`` removes it."""
        if self._depth == 0:
            raise RuntimeError(f"{self.path}: claim() needs the lock (use `with folder.lock():`)")
        if resume and overwrite:
            raise ValueError("resume and overwrite exclude each other: resume continues the run in "
                             "the folder, overwrite replaces it")
        if self.claimed:
            return
        found = [name for name in (LAST, BEST, CONFIG) if (self.path / name).exists()]
        if found and not resume:
            if not overwrite:
                raise ValueError(f"{self.path} already holds a training run ({', '.join(found)}); "
                                 f"continue it with --resume, replace it with --overwrite, or "
                                 f"choose another --out")
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)
            shutil.rmtree(self.path / SAMPLES, ignore_errors=True)
        self.claimed = True

    def write_text(self, name: str, text: str) -> Path:
        """Write ``name`` in the folder atomically (a temporary file renamed over it)."""
        path = self.path / name
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf8") as handle:
                handle.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


@contextmanager
def _serialised(folder: Path):
    """Hold an exclusive ``flock`` on ``folder`` itself: processes taking a lock on this host go
    one at a time, so taking over a stale lock (read, check, replace) is not a race. The
    kernel drops it when the holder dies, so it cannot go stale itself."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (an unreaped zombie counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


# -- what a resume may change ---------------------------------------------------------------

def run_settings(model, config: dict) -> dict:
    """A run's settings as one flat JSON-able dict: the spec, the build options, the class names,
    the frozen layers, the hyper-parameters ``config`` and whether weights are averaged."""
    spec = model.spec if model.spec is not None else load_spec(model.graph.name)
    settings = {"spec": spec, **model.graph.options.to_dict(), "class_names": model.class_names,
                "frozen": sorted(model.frozen), **config, "ema": config["ema_decay"] is not None}
    return json.loads(json.dumps(settings))  # tuples as lists, as they come back from a file


def compare_settings(stored: dict, new: dict) -> tuple[list[str], list[str]]:
    """The settings that differ, as ``"key: stored -> new"``: (fixed ones, changeable ones).

    Keys ``stored`` lacks (a checkpoint of an older version) are not compared, nor class names
    one side does not know.
    """
    fixed, changed = [], []
    for key, old in stored.items():
        if key not in new or new[key] == old or (key == "class_names" and None in (old, new[key])):
            continue
        (changed if key in CHANGEABLE else fixed).append(_difference(key, old, new[key]))
    return fixed, changed


def _difference(key: str, old, new) -> str:
    if key == "spec":
        old_name, new_name = (s.get("name") if isinstance(s, dict) else s for s in (old, new))
        if old_name == new_name:
            return f"spec: {old_name}, edited"
        old, new = old_name, new_name
    return f"{key}: {validate.show(old)} -> {validate.show(new)}"
