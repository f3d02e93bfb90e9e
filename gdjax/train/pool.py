"""The live runs of a sweep, chunk by chunk: diverged runs replayed and retired, runs
that stopped improving retired, the rest re-packed into fewer slots."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from gdjax.train import planner
from gdjax.train.loop import Progress, given
from gdjax.train.placement import _on_cpu, fetch, place
from gdjax.train.program import Program, State, compiled_chunk
from gdjax.train.start import keep as keep_state

__all__ = ["BLOCK_RUNS", "Pool", "take"]

#: On CPU, a chunk of more runs than this runs as equal blocks of at most this many, one
#: program call after another: XLA's vmapped step slows down past it (N1 on 2 cores: 23
#: ns per run-step at 1,024 runs, 68 at 4,096), and 4,096 runs in blocks of 1,024 take
#: 0.42x the time of one ``vmap`` of them all. On a GPU every run is in one call.
BLOCK_RUNS = 1024


def take(tree: Any, idx: Any) -> Any:
    """Rows ``idx`` of every leaf, gathered on the host (no eager device op to compile)."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[idx], fetch(tree))


def _padded(idx: np.ndarray, size: int) -> np.ndarray:
    """``idx`` followed by repeats of its last entry, ``size`` in all."""
    if idx.size == size:
        return idx
    return np.concatenate([idx, np.repeat(idx[-1:], size - idx.size)])


@dataclasses.dataclass
class Pool:
    """The live runs of a sweep, chunk by chunk; diverged runs retire with their state."""

    prog: Program
    data: Any
    key: Any
    n_runs: int
    steps: int
    seen_like: Any = None  # one record of the monitor's output (None without one)
    quantum: int = 1  # the number of slots is a multiple of the "settings" devices
    sharding: NamedSharding | None = None  # the slots' sharding on a mesh
    patience: int | None = None  # retire runs that stopped improving (None: never)
    min_delta: float = 0.0
    ok: Any = True  # the inputs' check (a bool array), passed to every chunk
    bad_input: Any = None  # raises the error that names the bad input (when not ok)

    def _chunk(self, prog, state, leaves, idx, t, n_records):
        n_blocks, size = self._blocks(idx.size)
        if n_blocks > 1:
            return self._blocked(prog, state, leaves, idx, t, n_records, size)
        key = self.key[idx] if self.prog.batched_key else self.key
        if self.sharding is not None:
            state, leaves = place((state, leaves), self.sharding)
            if key is not None:
                key = place(key, self.sharding if prog.batched_key else self._replicated)
        out = compiled_chunk(prog, state, self.data, key, leaves, t, self.steps, n_records, self.ok)
        return out[0], *fetch(out[1:4]), out[4]

    def _blocked(self, prog, state, leaves, idx, t, n_records, size):
        """The chunk as blocks of ``size`` runs, one call each, joined on the host (the
        end state too: the blocks' inputs are host slices, so nothing given is consumed)."""
        parts = []
        for lo in range(0, idx.size, size):
            block = slice(lo, lo + size)
            key = self.key[idx[block]] if prog.batched_key else self.key
            out = compiled_chunk(
                prog,
                take(state, block),
                self.data,
                key,
                take(leaves, block),
                t,
                self.steps,
                n_records,
                self.ok,
            )
            parts.append(fetch(out))
        end, buf, _, mon, fl = (
            jax.tree_util.tree_map(lambda *x, a=axis: np.concatenate(x, a), *p)
            for p, axis in zip(zip(*parts), (0, 1, 1, 1, 0), strict=True)
        )
        return end, buf, None, mon, fl

    def _blocks(self, n: int) -> tuple[int, int]:
        """(blocks, runs per block) of a chunk of ``n`` slots: one block on a mesh or a
        GPU, else as few equal blocks of at most :data:`BLOCK_RUNS` as cover ``n``."""
        if n <= BLOCK_RUNS or self.sharding is not None or not _on_cpu():
            return 1, n
        n_blocks = -(-n // BLOCK_RUNS)
        return n_blocks, -(-n // n_blocks)

    @property
    def _replicated(self) -> NamedSharding:
        return NamedSharding(self.sharding.mesh, PartitionSpec())

    def _slots(self, n: int) -> int:
        """Slots for ``n`` live runs: a power of two (few sizes, few compilations), a
        multiple of ``quantum``, at most the padded number of runs."""
        top = self._whole(-(-self.n_runs // self.quantum) * self.quantum)
        if n == self.n_runs:
            return top
        power = -(-(1 << (n - 1).bit_length()) // self.quantum) * self.quantum
        return min(top, self._whole(power))

    def _whole(self, n: int) -> int:
        """``n`` slots rounded up to whole blocks."""
        n_blocks, size = self._blocks(n)
        return n_blocks * size

    def run(self, state, leaves, progress, restart) -> dict[str, Any]:
        """Every chunk of the sweep from ``state`` (the runs at step 0; ``restart()``
        builds it again for a replay of the first chunk). A chunk consumes the state it is
        given (donated buffers); a state still needed after it is kept (``keep``)."""
        prog, re = self.prog, self.prog.record_every
        n_rec_total = -(-self.steps // re)
        # the loss history on the host, record-major (records, runs) as the chunks make
        # it: a chunk's records are one contiguous copy; the result is its transpose
        hist = None
        seen = None
        if self.seen_like is not None:
            seen = jax.tree_util.tree_map(
                lambda x: _blank_host((self.n_runs, n_rec_total, *x.shape), x.dtype),
                self.seen_like,
            )

        def keep_records(runs, rows, buf, n):  # records ``rows`` of ``runs`` from a chunk
            if seen is not None:
                jax.tree_util.tree_map(lambda d, b: _store(d, runs, rows, b, n), seen, buf)

        out = None  # the runs' final states on the host, made at the first retirement

        def host_out(like: State) -> dict[str, Any]:  # every run's state, zeros, on the host
            return jax.tree_util.tree_map(
                lambda x: np.zeros((self.n_runs, *x.shape[1:]), x.dtype), like._asdict()
            )

        retired_at = np.full(self.n_runs, -1, np.int32)
        finals = np.full(self.n_runs, np.nan, prog.loss_dtype)  # made by the last chunk
        ended = np.zeros(self.n_runs, bool)  # whose final loss that was
        live = _padded(np.arange(self.n_runs), self._slots(self.n_runs))
        again = restart  # the start of the next chunk, for its replay
        if live.size > self.n_runs:  # slots past the runs repeat the last run
            state, leaves = take(state, live), take(leaves, live)
            again = given(state)  # on the host: a chunk consumes only its device copy
        n_live, t = self.n_runs, 0
        bar = Progress(progress, self.steps, 0, -(-self.steps // (prog.capacity * re)), "sweep")
        try:
            while t < self.steps and n_live:
                n_records = planner.chunk_records(t, self.steps, re, prog.capacity, None)
                r0 = t // re
                end, buf, _, mon, fl = self._chunk(prog, state, leaves, live, t, n_records)
                ok, stopped, fl = fetch((self.ok, end.stopped, fl))  # one read of the flags
                if t == 0 and self.bad_input is not None and not ok:
                    self.bad_input()  # the chunk ran no step: say which input is not finite
                t_end = min(t + n_records * re, self.steps)
                rows = slice(r0, min(r0 + n_records, n_rec_total))
                made = np.asarray(buf)[: rows.stop - r0]
                stopped = stopped[:n_live]  # the lean chunk's flags: replay these
                diverging = stopped.any()
                got = made[:, :n_live]
                whole = n_live == self.n_runs and rows == slice(0, n_rec_total)
                if hist is None and whole and not diverging:
                    hist = got  # one chunk held the whole run: its buffer as it is
                else:
                    if hist is None or not hist.flags.writeable:
                        blank = np.full((n_rec_total, self.n_runs), np.nan, prog.loss_dtype)
                        hist = blank if hist is None else np.array(hist)
                    if n_live == self.n_runs:  # every run in its own slot, in order
                        hist[rows] = got
                    else:
                        hist[rows, live[:n_live]] = got
                keep_records(live[:n_live], rows, mon, n_live)
                if diverging:  # replay the diverged runs' chunk with the careful step
                    bad = np.flatnonzero(stopped)
                    sel = _padded(bad, self._slots(bad.size))
                    start = take(again(), sel)
                    careful = dataclasses.replace(prog, careful=True)
                    replayed, buf2, _, mon2, fl2 = self._chunk(
                        careful, start, take(leaves, sel), live[sel], t, n_records
                    )
                    if t_end >= self.steps:
                        finals[live[bad]], ended[live[bad]] = fetch(fl2)[: bad.size], True
                    out = host_out(replayed) if out is None else out
                    for name, value in replayed._asdict().items():
                        out[name] = _put(out[name], live[bad], value, bad.size)
                    hist[rows, live[bad]] = np.asarray(buf2)[: rows.stop - r0, : bad.size]
                    keep_records(live[bad], rows, mon2, bad.size)
                keep = np.flatnonzero(~stopped) if diverging else np.arange(n_live)
                if t_end >= self.steps:  # the last chunk computed the live runs' final loss
                    finals[live[keep]], ended[live[keep]] = fl[keep], True
                if self.patience is not None and keep.size and t_end < self.steps:
                    flat = _plateaued(
                        hist[: rows.stop, live[keep]].T, t_end, self.patience, re, self.min_delta
                    )
                    if flat.any():  # retire them as they are at the chunk's end
                        done, keep = keep[flat], keep[~flat]
                        out = host_out(end) if out is None else out
                        for name, value in end._asdict().items():
                            out[name] = _put(out[name], live[done], take(value, done), done.size)
                        retired_at[live[done]] = t_end
                gone = keep.size < n_live
                if out is None and keep.size == live.size == self.n_runs and t_end >= self.steps:
                    out = dict(end._asdict())  # no run retired: the device arrays as they are
                elif keep.size and (gone or t_end >= self.steps):
                    out = host_out(end) if out is None else out
                    for name, value in end._asdict().items():
                        out[name] = _put(out[name], live[keep], take(value, keep), keep.size)
                if gone and keep.size:  # re-pack the live runs (on the host)
                    sel = _padded(keep, self._slots(keep.size))
                    state, leaves, live = take(end, sel), take(leaves, sel), live[sel]
                    again = given(state)
                else:
                    state = end
                    if t_end < self.steps:  # the next chunk consumes it
                        again = given(keep_state(end))
                n_live, t = keep.size, t_end
                bar.update(t, None)
        finally:
            bar.close()
        out["losses"] = hist.T  # (runs, records), a view
        out["monitor"] = seen
        out["retired_at"] = retired_at
        out["final_loss"], out["ended"] = finals, ended
        return out


def _plateaued(
    losses: np.ndarray, t_end: int, patience: int, record_every: int, min_delta: float
) -> np.ndarray:
    """Which rows of ``losses`` (records up to step ``t_end``) did not improve their lowest
    value by more than ``min_delta`` (relative) in the last ``patience`` steps."""
    old = -(-(t_end - patience) // record_every)  # records made before the window
    if old < 1 or old >= losses.shape[1]:
        return np.zeros(losses.shape[0], bool)
    with np.errstate(invalid="ignore"):
        best_old = np.nanmin(losses[:, :old], axis=1)
        best = np.nanmin(losses, axis=1)
        return ~(best_old - best > min_delta * np.abs(best_old))


def _store(dst: np.ndarray, runs: np.ndarray, rows: slice, buf: Any, n: int) -> None:
    """``dst[runs, rows] = buf[records, :n]`` for a record-major chunk buffer."""
    dst[runs, rows] = np.swapaxes(np.asarray(buf)[: rows.stop - rows.start, :n], 0, 1)


def _blank_host(shape, dtype) -> np.ndarray:
    return np.full(shape, np.nan if np.issubdtype(dtype, np.inexact) else 0, dtype)


def _put(target: Any, rows: np.ndarray, value: Any, n: int) -> Any:
    """``target[rows] = value[:n]`` leaf by leaf, on host copies."""

    def one(dst, src):
        dst = np.array(dst)
        dst[rows] = np.asarray(src)[:n]
        return dst

    return jax.tree_util.tree_map(one, target, fetch(value))
