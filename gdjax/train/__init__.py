r"""Compiled training runs (:func:`fit`) and vmapped sweeps of runs (:func:`sweep`).

A run is gradient descent with any ``optax.GradientTransformation``:

.. math::

    g_t = \nabla_\theta \mathcal L(\theta_t; B_t), \qquad
    (u_t, s_{t+1}) = \mathrm{update}(g_t, s_t, \theta_t), \qquad
    \theta_{t+1} = \theta_t + u_t,

for ``t = 0 … steps-1``, where the batch :math:`B_t` is the whole data set (full batch) or
the ``t``-th slice of ``batch_size`` examples of a shuffled epoch (mini-batch).

The engine, one layer a module:

* :mod:`~gdjax.train.program`: the compiled chunk (a ``lax.while_loop`` of steps) whose
  arguments are everything that may change between calls;
* :mod:`~gdjax.train.start`: the state at step 0 with the input check, a fresh run of
  one chunk as one program, and kept copies;
* :mod:`~gdjax.train.planner`: how many records a chunk holds;
* :mod:`~gdjax.train.loop`: the host loop, progress bar and history;
* :mod:`~gdjax.train.args`: the argument checks, made before anything compiles;
* :mod:`~gdjax.train.resume`: checkpoints, their fingerprint and lock;
* :mod:`~gdjax.train.fitting` and :mod:`~gdjax.train.sweeping`: the two public functions.
"""

from gdjax.train.fitting import fit
from gdjax.train.program import StepInfo
from gdjax.train.results import DivergenceError, FitResult, SweepResult
from gdjax.train.resume import CHECKPOINT_NAME
from gdjax.train.settings import grid
from gdjax.train.start import compilations
from gdjax.train.sweeping import sweep

__all__ = [
    "CHECKPOINT_NAME",
    "DivergenceError",
    "FitResult",
    "StepInfo",
    "SweepResult",
    "compilations",
    "fit",
    "grid",
    "sweep",
]
