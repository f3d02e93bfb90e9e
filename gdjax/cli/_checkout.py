"""What the source-checkout commands (``bench``, ``train``, ``reproduce``) share.

The benchmark (``benchmarks/``) and the experiments (``experiments/``) are not part of the
library: they sit beside the ``gdjax/`` package in a source checkout, whatever its folder
is called. From an installed wheel these commands refuse with a :class:`UsageError`.
Output paths are checked here too, before any work, so a bad one costs nothing.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from gdjax._validate import UsageError


def checkout_folder(command: str, folder: str) -> Path:
    """``<checkout>/<folder>``, the folder beside the ``gdjax`` package, or a UsageError."""
    import gdjax

    path = Path(gdjax.__file__).resolve().parent.parent / folder
    if not path.is_dir():
        raise UsageError(
            f"gdjax {command} needs a source checkout of gdjax (the {folder}/ folder beside "
            "gdjax/); clone the repository and run it there"
        )
    return path


def import_from(command: str, folder: Path, module: str) -> ModuleType:
    """Import ``module`` with ``folder`` on ``sys.path``; refuse one found elsewhere."""
    entry = str(folder)
    if entry not in sys.path:
        sys.path.insert(0, entry)
    loaded = importlib.import_module(module)
    where = Path(getattr(loaded, "__file__", None) or "").resolve()
    if folder.resolve() not in where.parents:
        raise UsageError(
            f"gdjax {command}: the module {module!r} was imported from {where}, not from "
            f"{folder}; rename or uninstall the other one"
        )
    return loaded


def benchmarks(command: str = "bench") -> ModuleType:
    """The ``benchmarks`` package of the checkout."""
    return import_from(command, checkout_folder(command, "benchmarks").parent, "benchmarks")


def harness(command: str) -> ModuleType:
    """``experiments/_harness.py`` of the checkout (the experiment scripts' helpers)."""
    return import_from(command, checkout_folder(command, "experiments"), "_harness")


def _probe(arg: str, path: str | os.PathLike, folder: Path) -> None:
    """Create and remove a file in ``folder``: the one test that also holds for root, on
    read-only mounts and on pseudo file systems (``/proc``)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".gdjax-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise UsageError(f"{arg} {path}: cannot write in {folder} ({err.strerror})") from None


def writable_file(arg: str, path: str | os.PathLike) -> Path:
    """``path`` as a file that can be written: not a folder, its folder exists and is
    writable (an existing file must be writable too)."""
    p = Path(path)
    parent = p.parent
    if p.is_dir():
        raise UsageError(f"{arg} {path}: is a folder; give a file name")
    if not parent.is_dir():
        raise UsageError(f"{arg} {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UsageError(f"{arg} {path}: cannot write there (permission denied)")
    _probe(arg, path, parent)
    return p


def writable_dir(arg: str, path: str | os.PathLike, *, create: bool = False) -> Path:
    """``path`` as a folder that exists and is writable, or can be created; with
    ``create``, created now and tried with a file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{arg} {path}: is a file, not a folder")
    existing = p
    while not existing.exists():  # the nearest folder that exists must let us write
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{arg} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{arg} {path}: cannot write in {existing} (permission denied)")
    if create:
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(f"{arg} {path}: cannot create it ({err.strerror})") from None
        _probe(arg, path, p)
    return p
