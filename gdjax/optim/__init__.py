r"""Update rules as optax ``GradientTransformation``\ s, written from their equations.

>>> import gdjax as gd, optax
>>> opt = gd.optim.adam(1e-3)                       # optax's names and defaults
>>> opt = gd.optim.sgd(0.1, momentum=0.9, momentum_style="ema")   # the course notes' momentum
>>> opt = gd.optim.sgd(gd.optim.cosine_decay(0.1, 1000))           # a schedule as learning rate
>>> opt = gd.optim.chain(gd.optim.clip_by_global_norm(1.0), gd.optim.adamw(1e-3))

Rules: :func:`gd`, :func:`sgd`, :func:`rmsprop`, :func:`adam`, :func:`adamw`,
:func:`nadam`, :func:`nadamw`, :func:`adagrad`. Building blocks:
:mod:`gdjax.optim.transforms`. Schedules: :mod:`gdjax.optim.schedules` and
:mod:`gdjax.optim.joined`. Conventions table and equations: docs/optimizers.md.

Each rule returns a :class:`Rule`: an optax transformation that is a pytree of its
numeric hyperparameters, with its other choices static (:func:`partition` splits the
two), so ``gd.fit`` with a new learning rate does not compile again, and a rule built
with 1-D arrays holds a sweep's K settings (see :mod:`gdjax.optim._split`). A
:func:`chain` of rules (e.g. :func:`clip_by_global_norm` then :func:`adam`) is a pytree
of its rules' numbers too (:mod:`gdjax.optim._chain`); an ``optax.chain`` of them is
not: optax's closures hide the numbers, so it is static, compared by identity.
"""

from gdjax.optim._chain import Chain
from gdjax.optim._parts import combine, num_settings, partition, setting, settings
from gdjax.optim._split import Rule
from gdjax.optim._util import Scalar, ScalarOrSchedule, Schedule
from gdjax.optim.clipping import clip_by_global_norm
from gdjax.optim.joined import join_schedules, warmup_cosine_decay_schedule
from gdjax.optim.rules import (
    RULES,
    adagrad,
    adam,
    adamw,
    gd,
    get,
    nadam,
    nadamw,
    rmsprop,
    sgd,
)
from gdjax.optim.schedules import (
    PytreeSchedule,
    constant,
    cosine_decay,
    exponential_decay,
    linear_schedule,
    linear_warmup,
    piecewise_constant,
    polynomial_schedule,
)
from gdjax.optim.transforms import (
    AddDecayedWeightsState,
    ChainState,
    ScaleByAdamState,
    ScaleByLearningRateState,
    ScaleByRmsState,
    ScaleByRssState,
    ScaleState,
    TraceState,
    add_decayed_weights,
    chain,
    scale,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_rss,
    trace,
)

__all__ = [
    "RULES",
    "AddDecayedWeightsState",
    "Chain",
    "ChainState",
    "PytreeSchedule",
    "Rule",
    "Scalar",
    "ScalarOrSchedule",
    "ScaleByAdamState",
    "ScaleByLearningRateState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "ScaleState",
    "Schedule",
    "TraceState",
    "adagrad",
    "adam",
    "adamw",
    "add_decayed_weights",
    "chain",
    "clip_by_global_norm",
    "combine",
    "constant",
    "cosine_decay",
    "exponential_decay",
    "gd",
    "get",
    "join_schedules",
    "linear_schedule",
    "linear_warmup",
    "nadam",
    "nadamw",
    "num_settings",
    "partition",
    "piecewise_constant",
    "polynomial_schedule",
    "rmsprop",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_rms",
    "scale_by_rss",
    "setting",
    "settings",
    "sgd",
    "trace",
    "warmup_cosine_decay_schedule",
]
