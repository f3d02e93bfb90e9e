"""Where an experiment run writes: a staging folder, published whole, under a lock.

A run's outputs appear together or not at all: :class:`OutputFolder` gives a hidden
staging folder ``<out>/.<name>.partial-<pid>/`` and :meth:`OutputFolder.publish` renames
it to ``<out>/<name>/``; a run that raises (or is killed) leaves the previous ``<name>/``
as it was, and its staging folder is removed (by the next run, if the process died).
While it runs it holds ``<out>/.<name>.lock`` (``fcntl.flock``: freed when the process
ends, however it ends), so a second writer of the same ``--out`` and experiment, another
process or another thread, is refused at once instead of mixing its files with the first
one's. ``--out`` and matplotlib are
checked before any work.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

__all__ = ["OutputFolder", "check_out", "check_plotting", "writing"]

# lock path -> [fd, depth, thread]: one thread may nest its holds (reproduce, then the Run)
_HELD: dict[str, list[int]] = {}
_GUARD = threading.Lock()


def _refuse(lock: Path, name: str) -> None:
    from gdjax._validate import UsageError

    raise UsageError(
        f"--out {lock.parent}: another run is writing {name}/ there now (it holds "
        f"{lock}); wait for it to finish, or pass another --out"
    )


def _acquire(lock: Path, name: str) -> None:
    key, me = str(lock.resolve()), threading.get_ident()
    with _GUARD:
        if key in _HELD:
            if _HELD[key][2] != me:  # another thread of this process
                _refuse(lock, name)
            _HELD[key][1] += 1
            return
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no lock
            pass
        except BlockingIOError:
            os.close(fd)
            _refuse(lock, name)
        _HELD[key] = [fd, 1, me]


def _release(lock: Path) -> None:
    key = str(lock.resolve())
    with _GUARD:
        held = _HELD.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del _HELD[key]
            os.close(held[0])  # frees the flock


@contextlib.contextmanager
def writing(out: str | os.PathLike, name: str) -> Iterator[Path]:
    """Hold ``<out>/<name>/``'s lock for the block (an :class:`OutputFolder` made inside
    it, in this process, shares it); yields that folder. Refused if another process holds
    it."""
    out = check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    lock = out / f".{name}.lock"
    _acquire(lock, name)
    try:
        yield out / name
    finally:
        _release(lock)


def check_out(path: str | os.PathLike) -> Path:
    """``--out`` as a folder that is writable: created now and tried with a file (the rule
    of ``gdjax reproduce --out``)."""
    from gdjax.cli._checkout import writable_dir

    return writable_dir("--out", path, create=True)


def check_plotting() -> None:
    """Refuse at once, in one line, when matplotlib (every experiment draws) is missing."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError as err:
        raise ModuleNotFoundError(
            "the experiments draw their plots with matplotlib, which is not installed; "
            "install it with: pip install 'gdjax[plot]'",
            name="matplotlib",
        ) from err


def _abandon(lock: Path, staging: Path) -> None:
    """A run that never finished: drop its staging folder, free its lock."""
    shutil.rmtree(staging, ignore_errors=True)
    _release(lock)


class OutputFolder:
    """``<out>/<name>/`` of one run: ``dir`` (staging) until :meth:`publish`, then ``final``."""

    def __init__(self, out: str | os.PathLike, name: str) -> None:
        out = check_out(out)
        check_plotting()
        out.mkdir(parents=True, exist_ok=True)
        self.name, self.final = name, out / name
        if self.final.exists() and not self.final.is_dir():
            from gdjax._validate import UsageError

            raise UsageError(f"--out {out}: {self.final} is a file, not a folder")
        self._lock = out / f".{name}.lock"
        _acquire(self._lock, name)
        for stale in out.glob(f".{name}.partial-*"):  # left by a run that was killed
            shutil.rmtree(stale, ignore_errors=True)
        self.dir = out / f".{name}.partial-{os.getpid()}"
        self.dir.mkdir()
        self._abandon = weakref.finalize(self, _abandon, self._lock, self.dir)

    def publish(self) -> Path:
        """Swap the staging folder in for ``<out>/<name>/`` (the old one is removed last)."""
        old = self.final.parent / f".{self.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.dir, self.final)
        shutil.rmtree(old, ignore_errors=True)
        self._abandon.detach()
        _release(self._lock)
        self.dir = self.final
        return self.final
