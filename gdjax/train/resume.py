"""Checkpoints of a run that cannot lie: fingerprint, preflight, lock, history segments.

A run's directory holds

* ``checkpoint.npz``: the state at the last save (params, optimizer state, step, the
  divergence flags, the key) and, in its metadata, the run's *fingerprint* and the list
  of history segments it covers; its size does not grow with the run;
* ``history-<first record>.npz``: the losses (and trajectory) recorded since the save
  before, one file per save, written before the checkpoint that lists it;
* ``.lock``: held (``fcntl.flock``) by the one process that trains in the directory; the
  operating system releases it when that process ends, however it ends.

Every file is written atomically by :func:`gdjax.checkpoint.save`. The fingerprint holds
what makes two runs the same run: the initial params, the data and the key (by SHA-256),
the length, batch size and record interval, and the optimizer (its rule, static choices
and hyperparameter values). Resuming with anything else is refused, naming what differs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import checkpoint as ckpt
from gdjax import optim
from gdjax._validate import UsageError
from gdjax.train.placement import fetch

CHECKPOINT_NAME = "checkpoint.npz"
_KIND = "gdjax.fit"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def tree_summary(tree: Any) -> list[list[Any]]:
    return [
        [jax.tree_util.keystr(p), list(jnp.shape(x)), jnp.result_type(x).name]
        for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


def tree_sha256(tree: Any) -> str:
    h = hashlib.sha256()
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if jax.dtypes.issubdtype(jnp.result_type(x), jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        h.update(jax.tree_util.keystr(path).encode())
        h.update(np.ascontiguousarray(fetch(x)).tobytes())  # a global array: all of it
    return h.hexdigest()


def describe_optimizer(optimizer: Any) -> dict[str, Any]:
    """The optimizer as the fingerprint sees it: rule and static choices, and values.

    A ``gd.optim.chain`` is described member by member (``{"rule": "gd.optim.chain",
    "members": [...]}``), so another learning rate or threshold inside it differs. A
    transformation that is not a gdjax rule or chain (an ``optax.chain`` included) shows
    no hyperparameters; it is described by its type.
    """
    if isinstance(optimizer, optim.Chain):
        return {
            "rule": "gd.optim.chain",
            "members": [describe_optimizer(m) for m in optimizer.members],
        }
    static, leaves = optim.partition(optimizer)
    flat = jax.tree_util.tree_flatten_with_path(leaves)[0]
    values = {jax.tree_util.keystr(k): str(np.asarray(x)) for k, x in flat}
    return {"rule": _ADDRESS.sub("", repr(static)), "hyperparameters": values}


def fingerprint(
    params, data, key, optimizer, *, steps, batch_size, record_every, trajectory, monitor=None
) -> dict[str, Any]:
    """What makes two runs the same run (``monitor``: the monitor's name, when one records)."""
    extra = {} if monitor is None else {"monitor": monitor}
    return {
        **extra,
        "steps": steps,
        "batch_size": batch_size,
        "record_every": record_every,
        "trajectory": trajectory,
        "optimizer": describe_optimizer(optimizer),
        "params": tree_summary(params),
        "params_sha256": tree_sha256(params),
        "data": tree_summary(data),
        "data_sha256": tree_sha256(data),
        "key_sha256": None if key is None else tree_sha256(key),
    }


def _difference(path: str, old: Any, new: Any) -> str:
    """Where two fingerprint entries first differ, e.g.
    ``optimizer.hyperparameters.['hyperparams']['learning_rate']: checkpoint 0.1, this run 0.2``."""
    if isinstance(old, dict) and isinstance(new, dict):
        # the rule first, then a value both hold, a rule's own numbers before their derived
        # complements (1 − β): say what was set
        def order(k):
            return (k != "rule", k not in old or k not in new, "complements" in str(k), str(k))

        for key in sorted(set(old) | set(new), key=order):
            if old.get(key) != new.get(key):
                return _difference(f"{path}.{key}", old.get(key), new.get(key))
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            if a != b:
                return _difference(f"{path}[{i}]", a, b)
    return f"{path}: checkpoint {_short(old)}, this run {_short(new)}"


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def preflight(directory: Path, nbytes: int) -> Path:
    """Check, before any training, that ``directory`` can take this run's checkpoints."""
    if directory.exists() and not directory.is_dir():
        raise UsageError(
            f"`checkpoint_dir` {str(directory)!r} is a file, not a directory; pass a "
            f"directory (it is created if missing)."
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise UsageError(
            f"`checkpoint_dir` {str(directory)!r} is not writable ({err.strerror or err}); "
            f"pass a directory this process can write."
        ) from None
    free = shutil.disk_usage(directory).free
    if free < 2 * nbytes + (1 << 20):
        raise UsageError(
            f"`checkpoint_dir` {str(directory)!r} has {free / 2**20:.1f} MiB free, but a "
            f"checkpoint of this run needs about {2 * nbytes / 2**20:.1f} MiB (written "
            f"beside the last one). Free some space or choose another directory."
        )
    return directory / CHECKPOINT_NAME


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold ``directory``'s lock for the block; refuse if another run holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield
        return
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"`checkpoint_dir` {str(directory)!r} is in use by another run (it holds "
                f"{str(directory / '.lock')!r}). Wait for it to finish, or use another "
                f"directory."
            ) from None
        for stale in directory.glob(".*.npz.*.tmp"):  # half-written by a killed writer
            stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)  # releases the lock


def _segment_path(directory: Path, first: int) -> Path:
    return directory / f"history-{first:09d}.npz"


class Saver:
    """Writes a run's checkpoints: each save adds one history segment and replaces the
    checkpoint that lists the segments. A failed save is kept, not raised: the run goes
    on and its result says where the last good checkpoint is."""

    def __init__(self, path: Path, fingerprint: dict, segments: list[list[int]]):
        self.path, self.fingerprint, self.segments = path, fingerprint, list(segments)
        self.error: str | None = None
        self.saved_step: int | None = None

    def save(self, tree: dict[str, Any], history: dict[str, Any], first: int, step: int):
        if self.error is not None:
            return
        n_rec = first + int(np.shape(history["losses"])[0])
        try:
            if n_rec > first:
                seg = _segment_path(self.path.parent, first)
                ckpt.save(seg, history, {"kind": _KIND + ".history", "first": first})
                self.segments.append([first, n_rec])
            meta = {
                "kind": _KIND,
                "step": step,
                "records": n_rec,
                "segments": self.segments,
                "fingerprint": self.fingerprint,
            }
            ckpt.save(self.path, tree, meta)
            self.saved_step = step
        except OSError as err:
            where = (
                f"the last good checkpoint is {str(self.path)!r} at step {self.saved_step}"
                if self.saved_step is not None
                else "no checkpoint was written"
            )
            self.error = f"saving the checkpoint at step {step} failed ({err}); {where}"


def resume(path: Path, fingerprint: dict, like: dict[str, Any], history_like: dict[str, Any]):
    """The saved state, history and segments of this run, or a refusal with the reason."""
    meta = ckpt.read_metadata(path)
    if meta.get("kind") != _KIND:
        raise UsageError(f"Checkpoint {str(path)!r} is refused: it was not written by gd.fit.")
    saved = meta.get("fingerprint", {})
    diff = [k for k in fingerprint if saved.get(k) != fingerprint[k]]
    if diff:
        detail = "; ".join(_difference(k, saved.get(k), fingerprint[k]) for k in diff)
        raise UsageError(
            f"Checkpoint {str(path)!r} is refused: it belongs to a different run ({detail}). "
            f"Use another `checkpoint_dir` for this run, or delete the file to start afresh."
        )
    tree, _ = ckpt.load(path, like=like)
    parts, expect = [], 0
    for first, end in meta["segments"]:
        if first != expect:
            raise UsageError(f"Checkpoint {str(path)!r} is refused: its history has a gap.")
        n = end - first
        seg_like = jax.tree_util.tree_map(
            lambda x, n=n: np.zeros((n, *np.shape(x)[1:]), np.asarray(x).dtype), history_like
        )
        seg = _segment_path(path.parent, first)
        if not seg.exists():
            raise UsageError(
                f"Checkpoint {str(path)!r} is refused: its history segment {seg.name} is "
                f"missing. Delete the directory's files to start afresh."
            )
        parts.append(ckpt.load(seg, like=seg_like)[0])
        expect = end
    if expect != int(meta["records"]):
        raise UsageError(f"Checkpoint {str(path)!r} is refused: its history is incomplete.")
    return tree, parts, meta["segments"]
