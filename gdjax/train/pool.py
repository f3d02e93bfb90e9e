"""The live runs of a sweep, chunk by chunk: diverged runs replayed and retired, runs
that stopped improving retired, the rest re-packed into fewer slots."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from gdjax.train import planner
from gdjax.train.loop import Progress, given
from gdjax.train.placement import _on_cpu, fetch, place
from gdjax.train.program import Program, State, compiled_chunk
from gdjax.train.start import keep as keep_state

__all__ = ["BLOCK_RUNS", "MIN_BLOCK_RUNS", "MIN_THREAD_RUN_STEPS", "Pool", "take"]

#: On CPU, a chunk of more runs than this runs as equal blocks of at most this many, one
#: program call each: XLA's vmapped step slows down past it (N1 on 2 cores: 23 ns per
#: run-step at 1,024 runs, 68 at 4,096), and 4,096 runs in blocks of 1,024 take 0.42x the
#: time of one ``vmap`` of them all. On a GPU every run is in one call.
BLOCK_RUNS = 1024

#: On CPU, a chunk of at least twice this many runs is also split into one block per core
#: (blocks of at least this many runs), and the blocks run at once, one per thread: XLA's
#: CPU runtime runs a program of small operations on one core (the expert's
#: ``vmap(scan)`` of 1,024 N1 runs: 1.04 cores busy), and executes each call in the
#: thread that makes it, so calls from several threads share the cores.
MIN_BLOCK_RUNS = 256

#: ... and only when each block has at least this many run-steps to do over the sweep
#: (its runs × ``steps``): waking a helper thread and sharing two cores with it costs
#: about what it gives back on a short sweep (N1, 1,024 runs × 100 steps: 1.24–1.45 of the
#: expert's ``vmap(scan)`` on two threads, 1.09–1.26 as one block; × 1,000 steps:
#: 0.99–1.02 against 1.07–1.16).
MIN_THREAD_RUN_STEPS = 200_000


def bare(state: State) -> State:
    """``state`` without its counters, as a sweep's chunk takes it (it makes them)."""
    return state._replace(t=None, stopped=None, diverged_at=None)


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
    #: ``start(runs) -> (state, ok)``: the state at step 0 of the runs ``runs`` (an index
    #: array; None: every run) and whether the inputs are finite (a bool array)
    start: Callable[[Any], tuple[State, Any]] | None = None
    bad_input: Any = None  # raises the error that names the bad input (when not ok)
    shapes: Any = None  # hashable: the arguments' structure (with the program, the jit key)
    #: ``fresh(runs, prog, key, leaves, t, steps, records)``: :func:`start` and the first
    #: chunk in one program (:data:`~gdjax.train.start.compiled_fresh`), or None
    fresh: Callable[..., Any] | None = None

    def _chunk(self, prog, state, leaves, idx, t, n_records, ok):
        """One chunk of the slots ``idx`` (their runs) from ``state`` (None: the runs at
        step 0, started here): ``(end, losses, trajectory, monitor, final loss, ok)``, the
        buffers on the host, ``ok`` the inputs' check the chunk ran under."""
        n_blocks, size = self._blocks(idx.size)
        if n_blocks > 1:
            return self._blocked(prog, state, leaves, idx, t, n_records, size, ok)
        key = self.key[idx] if self.prog.batched_key else self.key
        if state is None and self.fresh is not None:  # (None on a mesh)
            out = self.fresh(idx, prog, key, leaves, t, self.steps, n_records)
            return out[0], *fetch(out[1:4]), *out[4:]
        if state is None:
            state, ok = self.start(idx)
        state = bare(state)
        if self.sharding is not None:
            state, leaves = place((state, leaves), self.sharding)
            if key is not None:
                key = place(key, self.sharding if prog.batched_key else self._replicated)
        out = compiled_chunk(prog, state, self.data, key, leaves, t, self.steps, n_records, ok)
        return out[0], *fetch(out[1:4]), out[4], ok

    def _blocked(self, prog, state, leaves, idx, t, n_records, size, ok):
        """The chunk as blocks of ``size`` slots, one call each, on up to one thread per
        core at once, joined on the host (the end state too: a block's input state is a
        host slice of ``state``, or, from step 0, started by the block itself, so nothing
        given is consumed). Only the records made are joined."""
        state, leaves = fetch((state, leaves))

        def inputs(i: int) -> tuple:  # on this thread: the helpers only run programs
            rows = slice(i * size, (i + 1) * size)
            key = self.key[idx[rows]] if prog.batched_key else self.key
            if state is None:
                block_state, block_ok = self.start(idx[rows])
            else:
                block_state, block_ok = take(state, rows), ok
            return (
                bare(block_state),
                self.data,
                key,
                take(leaves, rows),
                t,
                self.steps,
                n_records,
                block_ok,
            )

        args = [inputs(i) for i in range(-(-idx.size // size))]

        def block(i: int):
            end, buf, _, mon, fl = fetch(compiled_chunk(prog, *args[i]))
            cut = jax.tree_util.tree_map(lambda x: x[:n_records], (buf, mon))
            return end, *cut, fl, fetch(args[i][-1])

        parts = _each(block, len(args), warm=(self.shapes, prog, size))
        *joined, oks = zip(*parts, strict=True)
        end, buf, mon, fl = (
            jax.tree_util.tree_map(lambda *x, a=axis: np.concatenate(x, a), *p)
            for p, axis in zip(joined, (0, 1, 1, 0), strict=True)
        )
        return end, buf, None, mon, fl, np.all(oks)

    def _blocks(self, n: int) -> tuple[int, int]:
        """(blocks, runs per block) of a chunk of ``n`` slots: one block on a mesh or a
        GPU; on CPU as few equal blocks of at most :data:`BLOCK_RUNS` as cover ``n``, and
        at least one per core when each still holds :data:`MIN_BLOCK_RUNS` runs and
        :data:`MIN_THREAD_RUN_STEPS` run-steps."""
        if self.sharding is not None or not _on_cpu():
            return 1, n
        per_core = min(_cores(), n // MIN_BLOCK_RUNS)
        if per_core > 1 and (n // per_core) * self.steps < MIN_THREAD_RUN_STEPS:
            per_core = 1
        n_blocks = max(-(-n // BLOCK_RUNS), per_core)
        if n_blocks <= 1:
            return 1, n
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

    def run(self, leaves, progress) -> dict[str, Any]:
        """Every chunk of the sweep from step 0 (``self.start``; again for a replay of the
        first chunk). A chunk consumes the state it is given (donated buffers); a state
        still needed after it is kept (``keep``)."""
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
        padded = live.size > self.n_runs  # slots past the runs repeat the last run
        if padded:
            leaves = take(leaves, live)
        state, ok = None, None  # the first chunk starts its runs (blocks: each its own)

        def again():  # the start of the next chunk, for its replay
            return self.start(live if padded else None)[0]

        n_live, t = self.n_runs, 0
        bar = Progress(progress, self.steps, 0, -(-self.steps // (prog.capacity * re)), "sweep")
        try:
            while t < self.steps and n_live:
                n_records = planner.chunk_records(t, self.steps, re, prog.capacity, None)
                r0 = t // re
                end, buf, _, mon, fl, ok = self._chunk(prog, state, leaves, live, t, n_records, ok)
                ok, stopped, fl = fetch((ok, end.stopped, fl))  # one read of the flags
                if not ok:  # the chunk ran no step: say which input is not finite
                    self.bad_input()
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
                    replayed, buf2, _, mon2, fl2, _ = self._chunk(
                        careful, start, take(leaves, sel), live[sel], t, n_records, ok
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


@functools.cache
def _cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@functools.cache
def _helpers() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(_cores() - 1, thread_name_prefix="gdjax-block")


#: (arguments' structure, program, block size) of the block programs that have run: the
#: first call of one runs alone, so that it is compiled once, not once per thread.
_WARM: set[Any] = set()


def _each(fn: Callable[[int], Any], n: int, warm: Any) -> list[Any]:
    """``[fn(0), …, fn(n-1)]`` on this thread and up to ``_cores() - 1`` helper threads
    at once: with ``p`` of them, thread ``j`` computes ``fn(j)``, ``fn(j + p)``, … (the
    blocks are equal). A ``warm`` key not seen before runs ``fn(0)`` alone first, so that
    its program is compiled once, not once per thread."""
    results: list[Any] = [None] * n
    first = 0
    if warm not in _WARM:
        results[0], first = fn(0), 1
        _WARM.add(warm)
    p = max(1, min(_cores(), n - first))

    def work(j: int) -> None:
        for i in range(first + j, n, p):
            results[i] = fn(i)

    helpers = [_helpers().submit(work, j) for j in range(1, p)]
    try:
        work(0)
    finally:  # no block runs on after the chunk returned or raised
        concurrent.futures.wait(helpers)
    for helper in helpers:
        helper.result()  # a helper's error, raised here
    return results


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
