"""The host side of one run (:func:`gdjax.fit`): its chunks, history and checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from gdjax.train import planner
from gdjax.train import resume as R
from gdjax.train.loop import Progress, drive, given, last_finite, stack_host
from gdjax.train.placement import fetch
from gdjax.train.program import Program, State, compiled_chunk
from gdjax.train.records import final_loss
from gdjax.train.results import DivergenceError, FitResult
from gdjax.train.start import compiled_fresh, compiled_start, keep

__all__ = ["Run"]

_COUNTS: dict[int, jax.Array] = {}
_OK = np.asarray(True)  # the inputs' check until begin or _fresh makes one


def _count(i: int) -> jax.Array:
    """``i`` as an int32 device array, made once per value: a Python int argument is
    converted again at every call (N1, 2,000 steps: the chunk's three counts as arrays
    save ~25 µs of ~400)."""
    x = _COUNTS.get(i)
    if x is None:
        if len(_COUNTS) >= 256:
            _COUNTS.clear()
        x = _COUNTS[i] = jax.device_put(np.int32(i))  # no program (jnp.asarray compiles one)
    return x


@dataclasses.dataclass
class Run:
    """The host side of one run: chunks, history, checkpoints."""

    prog: Program
    data: Any
    key: Any
    opt_leaves: Any
    steps: int
    checkpoint_every: int | None
    params: Any  # the initial parameters (for the shapes of a resumed history)
    monitor_like: Any  # the shapes of one record of the monitor (None without one)
    bad_input: Any = None  # raises the error that names the bad input (when not ok)
    careful: Program | None = None  # prog with the careful step (made here if None)
    like: dict[str, Any] | None = None  # _history_like(), when known already
    history: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    saved_records: int = 0
    resumed: bool = False  # the state came from a checkpoint

    def __post_init__(self):
        if self.careful is None:
            self.careful = dataclasses.replace(self.prog, careful=True)
        if self.like is None:
            self.like = self._history_like()
        self.history = {name: [] for name in self.like}
        self.ok = _OK  # the inputs' check (begin, _fresh): a chunk runs no step unless it holds
        self.final = None  # the last chunk's final loss (NaN unless the run ended there)
        self.clean = False  # the last chunk that ran was lean and did not diverge

    def chunk_steps(self, t: int) -> int:
        re = self.prog.record_every
        n = planner.chunk_records(t, self.steps, re, self.prog.capacity, self.checkpoint_every)
        return min(n * re, self.steps - t)

    def begin(self) -> State:
        """The state at step 0 (cheap to build again: the replay of a first chunk does);
        the inputs' check is kept for the first chunk to read."""
        state, self.ok = compiled_start(self.prog, self.params, self.opt_leaves, self.data)
        return state

    def run_chunk(self, prog: Program, state: State, t: int, n: int):
        counts = self._counts(prog, t, n)
        return compiled_chunk(prog, state, self.data, self.key, self.opt_leaves, *counts, self.ok)

    def _counts(self, prog: Program, t: int, n: int) -> tuple:
        counts = t, self.steps, -(-n // prog.record_every)
        if prog.batch_sharding is None:  # one device: the counts as kept device arrays
            counts = tuple(map(_count, counts))
        return counts

    def resume(self, path: Path, fp: dict, state: State, params: Any):
        if not path.exists():
            return state, []
        like = {"state": state, **({} if self.key is None else {"key": self.key})}
        tree, parts, segments = R.resume(path, fp, like, self._history_like())
        self.resumed = True
        for part in parts:
            for name, chunks in self.history.items():
                chunks.append(jax.tree_util.tree_map(np.asarray, part[name]))
        self.saved_records = segments[-1][1] if segments else 0
        return tree["state"], segments

    def _history_like(self) -> dict[str, Any]:
        """Zero records of each recorded quantity: its structure, shapes and dtypes."""

        def empty(x):
            return np.zeros((0, *np.shape(x)), np.dtype(x.dtype))

        like = {"losses": np.zeros((0,), self.prog.loss_dtype)}
        if self.prog.trajectory:
            like["trajectory"] = jax.tree_util.tree_map(empty, self.params)
        if self.monitor_like is not None:
            like["monitor"] = jax.tree_util.tree_map(empty, self.monitor_like)
        return like

    def train(self, state: State | None, progress: bool | None, saver: R.Saver | None) -> State:
        """The run from ``state`` (None: a fresh run, not begun) to its end."""
        t0 = 0
        if self.resumed:  # where the checkpoint stands (a host read; a fresh run is at 0)
            t0 = min(int(state.t), self.steps)
            if bool(state.stopped) or t0 >= self.steps:  # finished or diverged
                return state
        n_chunks = -(-(self.steps - t0) // (self.prog.capacity * self.prog.record_every))
        if state is None:  # fresh, without checkpoints
            if n_chunks == 1 and not progress:
                return self._single()
            state = self.begin()
        bar = Progress(progress, self.steps, t0, n_chunks, "fit")
        careful = self.careful
        restart = given(keep(state)) if self.resumed else self.begin

        def on_chunk(s: State, outputs, t: int, t_end: int) -> None:
            losses = self._keep_records(outputs, t, t_end)
            bar.update(t_end, lambda: last_finite(losses))
            if saver is not None:
                every = self.checkpoint_every
                done = t_end >= self.steps or bool(s.stopped)
                if done or every is None or t_end % every == 0:
                    self.save(saver, s, t_end)

        try:
            return drive(
                lambda s, t, n: self.run_chunk(self.prog, s, t, n),
                state,
                t0,
                self.steps,
                self.chunk_steps,
                on_chunk=on_chunk,
                diverged=self._diverged,
                replay=lambda s, t, n: self.run_chunk(careful, s, t, n),
                keep=keep,
                restart=restart,
            )
        finally:
            bar.close()

    def _single(self) -> State:
        """A fresh run of one chunk, without checkpoints or a bar (the common short run):
        one program call (:data:`~gdjax.train.start.compiled_fresh`) and one host read;
        if it diverged, the careful replay, from the start again."""
        end, *outputs = self._fresh(self.prog)
        if self._diverged(end, outputs, self.steps):
            end, *outputs = self._fresh(self.careful)
        self._keep_records(outputs, 0, self.steps)
        return end

    def _fresh(self, prog: Program) -> list:
        counts = self._counts(prog, 0, self.steps)
        *out, self.ok = compiled_fresh(
            prog, self.params, self.data, self.key, self.opt_leaves, *counts
        )
        return out

    def _diverged(self, state: State, outputs: list, n: int) -> bool:
        """Whether a lean chunk diverged: one host read of its flag (raised by its own
        checks of the recorded losses, the parameters and the inputs) with its losses,
        which replace ``outputs[0]``."""
        stopped, outputs[0] = fetch((state.stopped, outputs[0]))
        if stopped and not fetch(self.ok):  # nothing ran: say which input is not finite
            self.bad_input()
        self.clean = not stopped
        return not self.clean

    def _keep_records(self, outputs: list, t: int, t_end: int) -> np.ndarray:
        """Append the records of the chunk from ``t`` to ``t_end`` to the history; return
        its losses (on the host)."""
        losses, traj, seen = fetch(outputs[:3])  # a replay's are still on the device
        self.final = outputs[3]
        n_rec = -(-(t_end - t) // self.prog.record_every)
        self.history["losses"].append(losses[:n_rec])
        for name, got in (("trajectory", traj), ("monitor", seen)):
            if name in self.history:
                self.history[name].append(jax.tree_util.tree_map(lambda x: x[:n_rec], got))
        return losses[:n_rec]

    def save(self, saver: R.Saver, state: State, t_end: int) -> None:
        total = sum(len(x) for x in self.history["losses"])
        first = self.saved_records
        history = {
            name: jax.tree_util.tree_map(lambda x: x[first:total], stack_host(chunks, total))
            for name, chunks in self.history.items()
        }
        tree = {"state": state, **({} if self.key is None else {"key": self.key})}
        saver.save(tree, history, first, t_end)
        if saver.error is None:
            self.saved_records = total

    def result(self, state: State, on_divergence: str, saver: R.Saver | None) -> FitResult:
        re = self.prog.record_every
        n_rec = -(-self.steps // re)
        diverged, diverged_at = False, -1
        if not self.clean:  # a replay, a resumed state, or no chunk: read the state's flags
            stopped, at = fetch((state.stopped, state.diverged_at))
            diverged, diverged_at = bool(stopped), int(at) if stopped else -1
        out = {name: self._recorded(name, n_rec, diverged_at) for name in self.history}
        result = FitResult(
            params=state.params,
            opt_state=state.opt_state,
            losses=out["losses"],
            final_loss=self._final_loss(state),
            steps=diverged_at if diverged else self.steps,
            diverged=diverged,
            diverged_at=diverged_at,
            trajectory=out.get("trajectory"),
            key=self.key,
            checkpoint_error=None if saver is None else saver.error,
            monitor=out.get("monitor"),
        )
        if diverged and on_divergence == "raise":
            raise DivergenceError(diverged_at, result, self._origin(state.params, diverged_at))
        return result

    def _final_loss(self, state: State) -> Any:
        """The final loss from the chunk that ended the run (it reached ``steps`` or
        stopped); computed here only when no chunk ran (a finished run, resumed)."""
        if self.final is not None:
            return self.final
        return final_loss(self.prog.loss_fn, state.params, self.data, False)

    def _recorded(self, name: str, n_rec: int, diverged_at: int) -> Any:
        """The ``n_rec`` records of ``name`` on the host: NaN (zeros in an integer leaf)
        where none was made, and after a diverged step (but the non-finite loss itself)."""
        chunks, re = self.history[name], self.prog.record_every
        if len(chunks) == 1 and diverged_at < 0:  # one chunk made every record: copy it
            if name == "losses" and len(chunks[0]) == n_rec:
                return chunks[0].copy()
            whole = jax.tree_util.tree_leaves(chunks[0])
            if all(len(x) == n_rec for x in whole):
                return jax.tree_util.tree_map(np.array, chunks[0])
        kept = min(sum(len(x) for x in self.history["losses"]), n_rec)
        if kept == n_rec and diverged_at < 0:  # every record made: one concatenation
            return stack_host(chunks, n_rec)
        after = np.arange(n_rec) * re > diverged_at if diverged_at >= 0 else slice(0, 0)

        def padded(x):
            inexact = np.issubdtype(x.dtype, np.inexact)
            full = np.full((n_rec, *x.shape[1:]), np.nan if inexact else 0, x.dtype)
            full[:kept] = x[:kept]
            full[after] = np.nan if inexact else 0
            return full

        return jax.tree_util.tree_map(
            padded, stack_host(chunks, kept) if chunks else self.like[name]
        )

    def _origin(self, params: Any, t: int) -> str | None:
        """Where step ``t``'s first non-finite value appears (None if it cannot be said)."""
        from gdjax.diagnostics import nonfinite_origin
        from gdjax.train.program import permutation

        prog, batch = self.prog, self.data
        try:
            if prog.batch_size is not None:  # the batch of step t (train/program.py's order)
                n_b = prog.n_examples // prog.batch_size
                perm = np.asarray(permutation(self.key, t // n_b, prog.n_examples))
                idx = perm[(t % n_b) * prog.batch_size : (t % n_b + 1) * prog.batch_size]
                batch = jax.tree_util.tree_map(lambda x: np.asarray(x)[idx], fetch(self.data))
            origin = nonfinite_origin(prog.loss_fn, fetch(params), batch)
        except Exception:  # a diagnosis must never hide the divergence itself
            return None
        return None if origin is None else origin.message
