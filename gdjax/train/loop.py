"""The host loop: chunks dispatched back to back, progress, and the loss history.

The host dispatches chunk ``k + 1`` before it reads chunk ``k``'s results, so the device
never waits for the host; a progress bar and checkpoints are served between chunks. A
run of one chunk (the common short run) makes no copy of its state at all.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def drive(
    run_chunk,
    state,
    t0: int,
    steps: int,
    plan: Callable[[int], int],
    *,
    on_chunk,
    diverged,
    replay,
    keep,
    restart,
):
    """Run chunks from step ``t0`` to ``steps``; return the final state.

    ``plan(t)`` is the number of steps of the chunk starting at ``t``;
    ``run_chunk(state, t, n) -> (state, *outputs)`` runs it (lean). ``on_chunk(state,
    outputs, t, t_end)`` is called for each finished chunk, in order, while the next one
    is already running (``outputs`` is the list ``diverged`` saw: it may have replaced
    entries with their host copies). When ``diverged(state, outputs, n)`` says a chunk
    diverged, ``replay(start_state, t, n)`` re-runs it with the careful program and its
    results are kept; the loop ends there if the careful run stopped
    (``state.stopped``), else goes on from the replay's end. It also ends at ``steps``.

    A chunk (and a replay) consumes the state it is given: its buffers are donated to
    the program. So before the host hands over a state it still needs (the end of the
    chunk it has not read yet, which is also the start of the next one) it takes
    ``keep(state)``, a copy; ``restart()`` gives the first chunk's start again.
    """
    start, pending, t, final = restart, None, t0, state
    while True:
        launched = None
        if t < steps:
            n = plan(t)
            if pending is not None:  # the pending chunk's end is about to be consumed
                kept = keep(state)
                pending = (*pending[:3], kept, pending[4])
                start = given(kept)
            new_state, *outputs = run_chunk(state, t, n)
            launched = (start, t, n, new_state, outputs)
            state, t = new_state, t + n
        if pending is not None:
            again, t_start, n, end, outputs = pending
            bad = diverged(end, outputs, n)
            if bad:
                end, *outputs = replay(again(), t_start, n)
            on_chunk(end, outputs, t_start, min(t_start + n, steps))
            final = end
            if bad:  # the chunk launched after this one began from a diverged state
                if bool(end.stopped) or t_start + n >= steps:
                    return final
                pending, state, t, start = None, end, t_start + n, given(keep(end))
                continue
        if launched is None:
            return final
        pending = launched


def given(state):
    """A function that returns ``state`` (a kept start)."""
    return lambda: state


class Progress:
    """A tqdm bar over the steps, updated between chunks (or nothing at all)."""

    def __init__(self, show: bool | None, total: int, initial: int, n_chunks: int, desc: str):
        if show is None:
            show = n_chunks > 1 and sys.stderr.isatty()
        self.bar = None
        if show and jax.process_index() == 0:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", leave=True)

    def update(self, t: int, loss: Callable[[], float | None] | None = None) -> None:
        """Move to step ``t``; ``loss()`` (called only when a bar is shown) is the last
        finite loss to display."""
        if self.bar is not None:
            self.bar.update(t - self.bar.n)
            loss = None if loss is None else loss()
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def last_finite(losses: np.ndarray) -> float | None:
    finite = losses[np.isfinite(losses)]
    return float(finite[-1]) if finite.size else None


def stack_host(chunks: list[Any], n: int) -> Any:
    """Concatenate per-chunk stacked trees on the host; keep the first ``n`` rows."""
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs)[:n], *chunks)


def nan_after(losses: np.ndarray, diverged_at: np.ndarray, record_every: int) -> np.ndarray:
    """``losses[..., i]`` set to NaN where record ``i``'s step comes after ``diverged_at``
    (−1: none)."""
    steps_of = np.arange(losses.shape[-1]) * record_every
    after = (diverged_at[..., None] >= 0) & (steps_of > diverged_at[..., None])
    return np.where(after, np.nan, losses)
