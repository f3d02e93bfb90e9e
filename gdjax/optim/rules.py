r"""The update rules: gradient descent and its variants.

Each function returns a :class:`~gdjax.optim.Rule`: an optax transformation (a chain of
the small transforms in :mod:`gdjax.optim.transforms`, built from the rule's leaves) that
is also a pytree of its numeric hyperparameters (:mod:`gdjax.optim._split`). Arguments
shared with optax's function of the same name have optax's names and defaults, and with
the same arguments the updates are the same step by step. Options that optax does not
have (``momentum_style``, ``bias_correction`` for Adam, ``weight_decay_style``,
``eps_in_sqrt`` for AdaGrad) encode the conventions of PyTorch and of the course notes;
docs/optimizers.md has the table.

Every numeric hyperparameter may be a traced JAX scalar (a sweep may build the rule
inside ``jax.vmap``) or a 1-D array of K settings; every learning rate may be a schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from gdjax._validate import UsageError, check_bool, check_choice
from gdjax.optim._split import BETA, DECAY, EPS, NONNEGATIVE, RATE, Rule, make, register
from gdjax.optim._util import Scalar, ScalarOrSchedule
from gdjax.optim.transforms import (
    MomentumStyle,
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
    "RULES", "adagrad", "adam", "adamw", "gd", "get", "nadam", "nadamw", "rmsprop", "sgd",
]  # fmt: skip

WeightDecayStyle = Literal["decoupled", "independent", "l2"]


def gd(learning_rate: ScalarOrSchedule) -> Rule:
    r"""Plain gradient descent: :math:`w \leftarrow w - \alpha g`.

    Applied to a mini-batch gradient this is mini-batch (stochastic) gradient descent.
    """
    return make("gd", **locals())  # the arguments, as given


def _gd(learning_rate):
    return chain(scale_by_learning_rate(learning_rate))


register("gd", _gd, {"learning_rate": RATE}, gd)


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: Scalar | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
    *,
    momentum_style: MomentumStyle = "trace",
) -> Rule:
    r"""Gradient descent with optional (Nesterov) momentum.

    .. math::
        v_t = \beta v_{t-1} + g_t, \qquad w_t = w_{t-1} - \alpha_t v_t
        \qquad (\text{Nesterov: } w_t = w_{t-1} - \alpha_t(g_t + \beta v_t)),

    with :math:`\beta` = ``momentum`` (``None``: no velocity, plain gradient descent).
    ``momentum_style="ema"`` is the course notes' :math:`v_t = \beta v_{t-1} + (1-\beta) g_t`,
    which equals the default with the learning rate multiplied by :math:`1-\beta`.
    """
    check_bool("nesterov", nesterov)
    check_choice("momentum_style", momentum_style, ("trace", "ema"))
    return make("sgd", **locals())  # the arguments, as given


def _sgd(learning_rate, momentum, nesterov, accumulator_dtype, momentum_style):
    if momentum is None:
        return chain(scale_by_learning_rate(learning_rate))
    return chain(
        trace(momentum, nesterov, accumulator_dtype, momentum_style=momentum_style),
        scale_by_learning_rate(learning_rate),
    )


register("sgd", _sgd, {"learning_rate": RATE, "momentum": BETA}, sgd)


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: Scalar = 0.9,
    eps: Scalar = 1e-8,
    initial_scale: Scalar = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: Scalar | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> Rule:
    r"""RMSprop: divide the gradient by a running root mean square of its history.

    .. math::
        s_t = \beta s_{t-1} + (1-\beta) g_t^2, \qquad
        w_t = w_{t-1} - \alpha_t\, g_t / \sqrt{s_t + \epsilon}

    with :math:`\beta` = ``decay``. ``eps_in_sqrt=False`` gives the course notes' and
    PyTorch's :math:`g_t / (\sqrt{s_t} + \epsilon)`. ``centered`` divides by the running
    standard deviation instead; ``momentum`` adds a velocity on the scaled step (as optax:
    :math:`v_t = \mu v_{t-1} + \alpha_t g_t/\sqrt{s_t+\epsilon}`, :math:`w_t = w_{t-1} - v_t`).
    """
    check_bool("nesterov", nesterov)
    return make("rmsprop", **locals())  # the arguments, as given


def _rmsprop(
    learning_rate, decay, eps, initial_scale, eps_in_sqrt, centered, momentum, nesterov,
    bias_correction,
):  # fmt: skip
    transforms = [
        scale_by_rms(decay, eps, initial_scale, eps_in_sqrt, bias_correction, centered),
        scale_by_learning_rate(learning_rate),
    ]
    if momentum is not None:
        transforms.append(trace(momentum, nesterov))
    return chain(*transforms)


register(
    "rmsprop",
    _rmsprop,
    {"learning_rate": RATE, "decay": BETA, "eps": EPS, "initial_scale": NONNEGATIVE,
     "momentum": BETA},
    rmsprop,
)  # fmt: skip


def adam(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    bias_correction: bool = True,
) -> Rule:
    r"""Adam: momentum on the gradient, RMSprop on its scale, both bias-corrected.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \\
        \hat m_t = \frac{m_t}{1-\beta_1^t}, \qquad \hat v_t = \frac{v_t}{1-\beta_2^t}, \qquad
        w_t = w_{t-1} - \alpha_t \frac{\hat m_t}{\sqrt{\hat v_t + \bar\epsilon} + \epsilon}

    with :math:`\bar\epsilon` = ``eps_root``. ``bias_correction=False`` drops the two
    divisions; ``nesterov=True`` is NAdam.
    """
    check_bool("nesterov", nesterov)
    check_bool("bias_correction", bias_correction)
    return make("adam", **locals())  # the arguments, as given


def _adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov, bias_correction):
    return chain(
        scale_by_adam(
            b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, bias_correction=bias_correction
        ),
        scale_by_learning_rate(learning_rate),
    )


_ADAM_KINDS = {"learning_rate": RATE, "b1": BETA, "b2": BETA, "eps": EPS, "eps_root": NONNEGATIVE}
register("adam", _adam, _ADAM_KINDS, adam)


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Any | Callable[[Any], Any] | None = None,
    *,
    nesterov: bool = False,
    bias_correction: bool = True,
    weight_decay_style: WeightDecayStyle = "decoupled",
) -> Rule:
    r"""Adam with weight decay :math:`\lambda` = ``weight_decay``.

    Where the decay enters is ``weight_decay_style``:

    * ``"decoupled"`` (optax, PyTorch ``AdamW``):
      :math:`w_t = w_{t-1} - \alpha_t(\hat u_t + \lambda w_{t-1})`, with :math:`\hat u_t`
      Adam's direction :math:`\hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon)`;
    * ``"independent"`` (Loshchilov & Hutter's decay, not scaled by the learning rate):
      :math:`w_t = w_{t-1} - \alpha_t \hat u_t - \lambda w_{t-1}`;
    * ``"l2"`` (PyTorch ``Adam(weight_decay=λ)``, an L2 penalty): Adam run on
      :math:`g_t + \lambda w_{t-1}`.

    ``mask`` (a pytree of bools like the params, or a function of the params) picks the
    weights that decay.
    """
    check_choice("weight_decay_style", weight_decay_style, ("decoupled", "independent", "l2"))
    check_bool("nesterov", nesterov)
    check_bool("bias_correction", bias_correction)
    return make("adamw", **locals())  # the arguments, as given


def _adamw(
    learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask, nesterov,
    bias_correction, weight_decay_style,
):  # fmt: skip
    direction = scale_by_adam(
        b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, bias_correction=bias_correction
    )
    decay = add_decayed_weights(weight_decay, mask)
    if weight_decay_style == "decoupled":
        return chain(direction, decay, scale_by_learning_rate(learning_rate))
    if weight_decay_style == "l2":
        return chain(decay, direction, scale_by_learning_rate(learning_rate))
    return chain(
        direction, scale_by_learning_rate(learning_rate, flip_sign=False), decay, scale(-1.0)
    )


register("adamw", _adamw, {**_ADAM_KINDS, "weight_decay": DECAY}, adamw)


def nadam(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Any = None,
    *,
    bias_correction: bool = True,
) -> Rule:
    r"""NAdam (Dozat, 2016): :func:`adam` with ``nesterov=True``, as optax's ``nadam``.

    The first moment is looked at one step ahead:
    :math:`\hat m_t = \beta_1 m_t/(1-\beta_1^{t+1}) + (1-\beta_1) g_t/(1-\beta_1^t)`.
    """
    return adam(
        learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=True,
        bias_correction=bias_correction,
    )  # fmt: skip


def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Any | Callable[[Any], Any] | None = None,
    *,
    bias_correction: bool = True,
    weight_decay_style: WeightDecayStyle = "decoupled",
) -> Rule:
    r""":func:`adamw` with ``nesterov=True`` (NAdam's first moment, :func:`nadam`), as
    optax's ``nadamw``."""
    return adamw(
        learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask, nesterov=True,
        bias_correction=bias_correction, weight_decay_style=weight_decay_style,
    )  # fmt: skip


def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: Scalar = 0.1,
    eps: Scalar = 1e-7,
    *,
    eps_in_sqrt: bool = True,
) -> Rule:
    r"""AdaGrad: divide by the root of the sum of all squared gradients so far.

    .. math::
        G_t = G_{t-1} + g_t^2, \qquad w_t = w_{t-1} - \alpha_t\, g_t / \sqrt{G_t + \epsilon}

    with :math:`G_0` = ``initial_accumulator_value``. ``eps_in_sqrt=False`` gives
    PyTorch's :math:`g_t / (\sqrt{G_t} + \epsilon)` (PyTorch's defaults are
    ``initial_accumulator_value=0``, ``eps=1e-10``).
    """
    check_bool("eps_in_sqrt", eps_in_sqrt)
    return make("adagrad", **locals())  # the arguments, as given


def _adagrad(learning_rate, initial_accumulator_value, eps, eps_in_sqrt):
    return chain(
        scale_by_rss(initial_accumulator_value, eps, eps_in_sqrt),
        scale_by_learning_rate(learning_rate),
    )


register(
    "adagrad",
    _adagrad,
    {"learning_rate": RATE, "initial_accumulator_value": NONNEGATIVE, "eps": EPS},
    adagrad,
)

RULES: dict[str, Callable[..., Rule]] = {
    "gd": gd,
    "sgd": sgd,
    "rmsprop": rmsprop,
    "adam": adam,
    "adamw": adamw,
    "nadam": nadam,
    "nadamw": nadamw,
    "adagrad": adagrad,
}
"""The update rules by name, e.g. for a command-line flag or a config file."""


def get(name: str) -> Callable[..., Rule]:
    """The rule called ``name`` (``"gd"``, ``"sgd"``, ``"rmsprop"``, ``"adam"``, ...)."""
    if not isinstance(name, str) or name not in RULES:
        raise UsageError(
            f"`name` {name!r} is not an update rule; choose one of {', '.join(RULES)}."
        )
    return RULES[name]
