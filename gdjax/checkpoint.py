"""Atomic, pickle-free checkpoints of pytrees.

A checkpoint is one ``.npz`` file (numpy's zip of ``.npy`` arrays, read back with
``allow_pickle=False``) holding

* every leaf of the pytree, keyed by its pytree path (``tree['params']['w']``);
* ``__gdjax_metadata__``: UTF-8 JSON with the format version, the tree structure
  (``str(treedef)``), each leaf's path, shape and dtype, and the caller's metadata;
* ``__gdjax_sha256__``: the SHA-256 of the metadata and of every leaf's bytes, verified
  on load, so a flipped bit is refused even where zip's own CRC would not look.

:func:`save` writes a temporary file in the target directory, flushes and ``fsync``\\ s it,
then ``os.replace``\\ s it onto the target: a reader (or a process killed mid-write) sees
either the old checkpoint or the new one, never half of one. :func:`load` refuses a corrupt,
truncated or mismatched file with a ``ValueError`` naming the file and what is wrong.

>>> save("run/ckpt.npz", {"w": jnp.ones(3)}, {"step": 10})      # doctest: +SKIP
>>> tree, meta = load("run/ckpt.npz", like={"w": jnp.zeros(3)})  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["FORMAT", "VERSION", "load", "read_metadata", "save"]

FORMAT = "gdjax-checkpoint"
VERSION = 1
_META = "__gdjax_metadata__"
_HASH = "__gdjax_sha256__"


def _entry(path: str) -> str:
    return "tree" + path


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_numpy(leaf: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """A leaf as a plain-dtype numpy array, plus what is needed to rebuild it."""
    info: dict[str, Any] = {}
    if _is_key(leaf):
        info["key_impl"] = str(jax.random.key_impl(leaf))
        leaf = jax.random.key_data(leaf)
    arr = np.asarray(leaf)
    info["shape"] = list(arr.shape)
    info["dtype"] = arr.dtype.name
    if arr.dtype.kind == "O":
        raise TypeError("checkpoint.save: object arrays cannot be saved without pickle.")
    if arr.dtype.kind == "V":  # ml_dtypes (bfloat16, float8...): store the raw bits
        arr = arr.view(f"u{arr.dtype.itemsize}")
    return np.ascontiguousarray(arr).reshape(arr.shape), info  # (keeps 0-d arrays 0-d)


def _from_numpy(arr: np.ndarray, info: Mapping[str, Any]) -> Any:
    dtype = jnp.dtype(info["dtype"])
    if arr.dtype != dtype:
        arr = arr.view(dtype)
    if "key_impl" in info:
        return jax.random.wrap_key_data(jnp.asarray(arr), impl=info["key_impl"])
    return arr


def _digest(meta_bytes: bytes, arrays: list[tuple[str, np.ndarray]]) -> str:
    h = hashlib.sha256(meta_bytes)
    for name, arr in arrays:
        h.update(name.encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def save(path: str | os.PathLike, tree: Any, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``tree`` and JSON-able ``metadata`` to ``path`` atomically; return the path.

    The file appears under its final name only once it is complete and on disk
    (temporary file in the same directory, ``fsync``, ``os.replace``, ``fsync`` of the
    directory). Leaves may be jax or numpy arrays, Python scalars, or PRNG keys.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"checkpoint.save: `path` must end in .npz, got {str(path)!r}.")
    try:
        user = json.loads(json.dumps(dict(metadata or {})))
    except TypeError as e:
        raise TypeError(f"checkpoint.save: `metadata` must be JSON-serialisable ({e}).") from e
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    arrays, infos = [], []
    for keypath, leaf in leaves:
        key = jax.tree_util.keystr(keypath)
        arr, info = _to_numpy(leaf)
        arrays.append((_entry(key), arr))
        infos.append({"path": key, **info})
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "treedef": str(treedef),
        "leaves": infos,
        "metadata": user,
    }
    meta_bytes = json.dumps(meta, sort_keys=True).encode()
    payload = dict(arrays)
    payload[_META] = np.frombuffer(meta_bytes, np.uint8)
    payload[_HASH] = np.frombuffer(_digest(meta_bytes, arrays).encode(), np.uint8)

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _bad(path: Path, what: str) -> ValueError:
    return ValueError(
        f"Checkpoint {str(path)!r} is refused: {what}. Delete or move the file to start the "
        f"run afresh, or point `checkpoint_dir` at another directory."
    )


def _open(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read every entry, check format and checksum; return (arrays, metadata)."""
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {str(path)!r}.")
    try:
        with np.load(path, allow_pickle=False) as z:
            entries = {name: z[name] for name in z.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as e:
        raise _bad(path, f"it is corrupt or truncated ({type(e).__name__}: {e})") from e
    if _META not in entries or _HASH not in entries:
        raise _bad(path, "it is not a gdjax checkpoint (no metadata or checksum entry)")
    meta_bytes = entries.pop(_META).tobytes()
    stored_hash = entries.pop(_HASH).tobytes().decode(errors="replace")
    try:
        meta = json.loads(meta_bytes)
    except ValueError as e:
        raise _bad(path, f"its metadata is not valid JSON ({e})") from e
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise _bad(
            path,
            f"format {meta.get('format')!r} version {meta.get('version')!r}; this gdjax reads "
            f"{FORMAT!r} version {VERSION}",
        )
    names = [_entry(info["path"]) for info in meta["leaves"]]
    if sorted(names) != sorted(entries):
        raise _bad(path, "its entries do not match the leaves its metadata lists")
    arrays = [(n, entries[n]) for n in names]
    if _digest(meta_bytes, arrays) != stored_hash:
        raise _bad(path, "its SHA-256 checksum does not match its contents (the file is corrupt)")
    return entries, meta


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The caller's metadata of the checkpoint at ``path`` (after verifying the file)."""
    return _open(Path(path))[1]["metadata"]


def load(path: str | os.PathLike, like: Any = None) -> tuple[Any, dict[str, Any]]:
    """Read the checkpoint at ``path``; return ``(tree, metadata)``.

    Args:
      path: an ``.npz`` file written by :func:`save`.
      like: a pytree with the structure, shapes and dtypes expected (e.g. the initial
        state of the run). The stored tree must match it exactly. Without ``like``,
        ``tree`` is a flat dict ``{path: array}``.

    Raises:
      FileNotFoundError: there is no file at ``path``.
      ValueError: the file is corrupt, truncated, not a gdjax checkpoint, or does not
        match ``like``; the message names the file and the difference.
    """
    path = Path(path)
    entries, meta = _open(path)
    infos = meta["leaves"]
    values = [_from_numpy(entries[_entry(i["path"])], i) for i in infos]
    if like is None:
        return {i["path"]: v for i, v in zip(infos, values)}, meta["metadata"]

    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    if str(treedef) != meta["treedef"]:
        raise _bad(
            path,
            f"its tree structure differs from the run's.\n  checkpoint: {meta['treedef']}\n"
            f"  expected:   {treedef}",
        )
    for (keypath, ref), info in zip(leaves, infos):
        _, want = _to_numpy(ref)
        got = (info["shape"], info["dtype"], info.get("key_impl"))
        expected = (want["shape"], want["dtype"], want.get("key_impl"))
        if got != expected:
            raise _bad(
                path,
                f"leaf {jax.tree_util.keystr(keypath)} has shape {tuple(got[0])} and dtype "
                f"{got[1]}, expected shape {tuple(expected[0])} and dtype {expected[1]}",
            )
    tree = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(v) for v in values])
    return tree, meta["metadata"]
