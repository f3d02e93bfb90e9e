"""Hyperparameters as data: a rule's numbers are pytree leaves, its choices are static.

Every rule of :mod:`gdjax.optim` (``gd``, ``sgd``, ``adam``, ...) returns a :class:`Rule`:
an ``optax.GradientTransformationExtraArgs`` that is also a JAX pytree. Its leaves are
its numeric hyperparameters (learning rate, β's, eps, weight decay, a gdjax schedule's
numbers) and, for each β, its complement :math:`1-β` rounded once from the caller's
number (so that the rule's ``1 - b1`` is optax's); its aux data is the rule's name and
its other arguments (``nesterov``, dtypes, a mask, a schedule function of your own),
hashable and compared by value. So ``jax.jit(f)(rule, ...)`` compiles once per rule and
choice of options, whatever the numbers, and ``gd.optim.partition`` / ``combine``
(:mod:`gdjax.optim._parts`) split and rebuild any optimizer for the training engine: a
rule into (hashable static, leaves), a ``gd.optim.chain`` member by member
(:mod:`gdjax.optim._chain`), any other transformation (optax's own, an ``optax.chain``)
into itself compared by identity, and no leaves.

A rule built with 1-D arrays (``gd.optim.sgd(jnp.logspace(-3, 0, 64))``) holds K settings:
each concrete element is checked as a scalar would be, every leaf is broadcast to
``(K,)``, ``gd.optim.num_settings`` says K, and ``gd.sweep`` (or ``jax.vmap`` over the rule)
runs them; its own ``init``/``update`` refuse to run outside vmap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax

from gdjax._validate import UsageError, is_concrete
from gdjax.optim._hyper import (
    as_leaf,
    broadcast_settings,
    check_elements,
    check_one_setting,
    check_user_schedule,
    complement,
    default_float,
    freeze,
    settings_count,
    show,
    thaw,
)
from gdjax.optim._schedule import PytreeSchedule, check_schedule_values
from gdjax.optim._util import (
    Beta,
    check_beta,
    check_eps,
    check_learning_rate,
    check_nonnegative,
    check_params_leaves,
)

__all__ = ["Rule", "make", "register"]


@dataclasses.dataclass(frozen=True)
class Kind:
    """How a numeric argument is checked, and whether it may be a schedule or is a β."""

    check: Callable[[str, Any], None]
    schedule_ok: bool = False
    beta: bool = False
    what: str = "the value"  # what a schedule's value is, for its check
    zero_ok: bool = True  # may a schedule be 0 at every step?


RATE = Kind(check_learning_rate, schedule_ok=True, what="a learning rate", zero_ok=False)
DECAY = Kind(check_nonnegative, schedule_ok=True, what="a weight decay")  # number or schedule
BETA = Kind(check_beta, beta=True)
EPS = Kind(check_eps)
NONNEGATIVE = Kind(check_nonnegative)
POSITIVE = Kind(check_eps)  # a positive finite number (eps, a clipping threshold)


@dataclasses.dataclass(frozen=True)
class _Spec:
    build: Callable[..., optax.GradientTransformation]  # keyword arguments -> a chain
    kinds: Mapping[str, Kind]  # the numeric arguments
    public: Callable[..., Rule]  # gd.optim.<name>, for Rule.replace


_SPECS: dict[str, _Spec] = {}


def register(name: str, build: Callable, kinds: Mapping[str, Kind], public: Callable) -> None:
    """Declare rule ``name``: its chain builder, numeric arguments and public function."""
    _SPECS[name] = _Spec(build, dict(kinds), public)


def is_rule_function(fn: Any) -> bool:
    """Whether ``fn`` is one of the rule functions (``gd.optim.sgd``, ``gd.optim.adam``, ...)."""
    return any(spec.public is fn for spec in _SPECS.values())


_UNKNOWN = object()


class _Core:
    """A rule's data; ``init``/``update`` are its bound methods (so the Rule compares and
    hashes by this object's identity, as a closure-built transformation does)."""

    __slots__ = (
        "complements",
        "hyperparams",
        "k_",
        "name",
        "parts_",
        "settings_",
        "static",
        "transform_",
    )

    def __init__(self, name: str, hyperparams: Any, complements: Any, static: tuple) -> None:
        self.name, self.static = name, static
        self.hyperparams, self.complements = hyperparams, complements
        self.transform_ = None  # built on first use: unflatten must accept any leaves
        self.k_: Any = _UNKNOWN  # num_settings, counted on first use (the leaves are fixed)
        self.settings_: dict[str, Any] | None = None  # gd.optim.settings, when immutable
        self.parts_: Any = None  # gd.optim.partition's static part, made on first use

    def num_settings(self) -> int | None:
        if self.k_ is _UNKNOWN:
            self.k_ = settings_count((self.hyperparams, self.complements))
        return self.k_

    def __getstate__(self) -> tuple:  # pickle the data, not the built closures
        return self.name, self.hyperparams, self.complements, self.static

    def __setstate__(self, state: tuple) -> None:
        self.__init__(*state)

    def transform(self) -> optax.GradientTransformation:
        if self.transform_ is None:
            args = dict(self.hyperparams)
            for arg, c in self.complements.items():
                _check_complement(arg, args[arg], c)
                args[arg] = Beta(args[arg], c)
            args.update({arg: thaw(v) for arg, v in self.static})
            self.transform_ = _SPECS[self.name].build(**args)
        return self.transform_

    def _check_one_setting(self) -> None:
        check_one_setting(self.hyperparams, f"gd.optim.{self.name} rule")
        check_one_setting(self.complements, f"gd.optim.{self.name} rule")

    def init(self, params: Any) -> Any:
        self._check_one_setting()
        check_params_leaves(params)
        return self.transform().init(params)

    def update(self, updates: Any, state: Any, params: Any = None, **extra_args: Any):
        del extra_args  # value=, grad=, value_fn=, ...: accepted, not used
        self._check_one_setting()
        return self.transform().update(updates, state, params)


def _check_complement(arg: str, beta: Any, comp: Any) -> None:
    """A β and its stored ``1 − β`` must agree (to rounding) when both are concrete."""
    if not (is_concrete(beta) and is_concrete(comp)):
        return
    b, c = np.asarray(beta, np.float64), np.asarray(comp, np.float64)
    tol = 2 * float(np.finfo(np.asarray(comp).dtype).eps)
    if np.any(np.abs(c - (1 - b)) > tol):
        raise UsageError(
            f"the rule's leaf `complements['{arg}']` ({c}) is not 1 − {arg} (1 − {b}): its "
            f"leaves were replaced one by one. Change a hyperparameter with "
            f"opt.replace({arg}=...), which keeps the two together."
        )


class Rule(optax.GradientTransformationExtraArgs):
    """A ``gd.optim`` update rule: an optax transformation whose numbers are pytree leaves.

    ``init(params)`` and ``update(updates, state, params=None, **extra_args)`` are optax's.
    ``name`` is the rule (``"adam"``), ``hyperparams`` its numeric arguments (name ->
    array, or a gdjax schedule), ``static`` its other arguments, ``num_settings`` K for a
    rule of K settings (else None); ``replace(**changes)`` builds the rule again with some
    arguments changed, checked as the rule's function checks them.
    """

    __slots__ = ()

    @property
    def _core(self) -> _Core:
        core = getattr(self.init, "__self__", None)
        if not isinstance(core, _Core):
            raise UsageError("this Rule was not built by a gd.optim rule function.")
        return core

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def hyperparams(self) -> dict[str, Any]:
        return dict(self._core.hyperparams)

    @property
    def static(self) -> dict[str, Any]:
        return {arg: thaw(v) for arg, v in self._core.static}

    @property
    def num_settings(self) -> int | None:
        return self._core.num_settings()

    def replace(self, **changes: Any) -> Rule:
        """The same rule with some arguments changed, e.g. ``opt.replace(learning_rate=0.01)``."""
        core = self._core
        args = {**self.hyperparams, **self.static}
        for arg, c in core.complements.items():  # an unchanged β keeps its complement
            args[arg] = Beta(args[arg], c)
        return _SPECS[core.name].public(**{**args, **changes})

    def __repr__(self) -> str:
        try:
            core = self._core
        except UsageError:
            return super().__repr__()
        shown = [f"{a}={show(v)}" for a, v in core.hyperparams.items()]
        shown += [f"{a}={show(thaw(v))}" for a, v in core.static]
        return f"gd.optim.{core.name}({', '.join(shown)})"


def _new(name: str, hyperparams: Any, complements: Any, static: tuple) -> Rule:
    core = _Core(name, hyperparams, complements, static)
    return Rule(core.init, core.update)


def _flatten_with_keys(rule: Rule):
    core = rule._core
    children = (
        (jax.tree_util.GetAttrKey("hyperparams"), core.hyperparams),
        (jax.tree_util.GetAttrKey("complements"), core.complements),
    )
    return children, (core.name, core.static)


jax.tree_util.register_pytree_with_keys(
    Rule,
    _flatten_with_keys,
    lambda aux, children: _new(aux[0], children[0], children[1], aux[1]),
    flatten_func=lambda r: ((r._core.hyperparams, r._core.complements), (r.name, r._core.static)),
)


def _first(x: Any) -> Any:
    """Setting 0 of a leaf: on the host when it has a value (no eager device op)."""
    return np.asarray(x)[0] if is_concrete(x) else x[0]


def make(name: str, **args: Any) -> Rule:
    """Rule ``name`` from its arguments: numbers to checked leaves, the rest static.

    A rule function calls ``make(name, **locals())`` first thing after its checks, so
    ``args`` are exactly its arguments. A rule is a value: arguments that cannot change
    (numbers, strings, None, concrete ``jax.Array`` values, by identity) give back the rule
    built from them lately, checked once (a sweep's grid of 1,024 learning rates is
    looked at once, not at every call that builds its rule again).
    """
    key = _made_key(name, args)
    made = None if key is None else _MADE.get(key)
    if made is not None:
        return made[0]
    rule = _make(name, args)
    if key is not None:
        if len(_MADE) >= _MADE_MAX:  # (as _BUILT below)
            _MADE.clear()
        _MADE[key] = (rule, tuple(args.values()))  # held: their ids stay theirs
    return rule


def _made_key(name: str, args: Mapping[str, Any]) -> tuple | None:
    """The memo key of a rule's arguments when none of them can change after the rule
    is built: a Python number, string or None (by type and value), a concrete
    ``jax.Array`` (by identity; immutable). None otherwise: a NumPy array can be written
    to, a traced value must not outlive its trace, anything else is built anew."""
    key: list[Any] = [name, default_float()]
    for arg, v in args.items():
        if isinstance(v, jax.Array):
            if not is_concrete(v) or v.is_deleted():
                return None
            key.append((arg, id(v)))
        elif type(v) is float:
            key.append((arg, float, v.hex()))  # -0.0 is not 0.0
        elif v is None or type(v) in (bool, int, str):
            key.append((arg, type(v), v))
        else:
            return None
    return tuple(key)


#: Rules built lately, by :func:`_made_key` of their arguments: ``key -> (rule, args)``
#: (emptied when full).
_MADE: dict[tuple, tuple[Rule, tuple]] = {}
_MADE_MAX = 256


def _make(name: str, args: Mapping[str, Any]) -> Rule:
    """The rule ``name`` from ``args``, checked and built (see :func:`make`)."""
    spec = _SPECS[name]
    hyper, comps, static = {}, {}, {}
    for arg, value in args.items():
        kind = spec.kinds.get(arg)
        if kind is None or value is None:
            static[arg] = freeze(value)
        elif kind.schedule_ok and isinstance(value, PytreeSchedule):
            check_schedule_values(arg, value, what=kind.what, allow_all_zero=kind.zero_ok)
            hyper[arg] = value
        elif kind.schedule_ok and callable(value):
            check_user_schedule(arg, value)
            static[arg] = freeze(value)
        else:
            given = value.value if isinstance(value, Beta) else value
            leaf = as_leaf(arg, given)
            check_elements(arg, leaf, kind.check)
            hyper[arg] = leaf
            if kind.beta:
                comp = value.complement if isinstance(value, Beta) else None
                comps[arg] = complement(given, leaf) if comp is None else as_leaf(arg, comp)
    k = settings_count(hyper)
    hyper, comps = broadcast_settings((hyper, comps), k)
    rule = _new(name, hyper, comps, tuple(sorted(static.items())))
    rule._core.k_ = k  # counted above (the complements have the same K)
    # Build one setting now, so that a bad option is refused here and not at init. The
    # numbers are checked above, so the build checks only the static choices: once per
    # rule, choices and structure of the numbers (a new learning rate is not built again).
    seen = (name, rule._core.static, jax.tree.structure((hyper, comps)))
    if seen not in _BUILT:
        (jax.tree.map(_first, rule) if k is not None else rule)._core.transform()
        if len(_BUILT) >= _BUILT_MAX:
            _BUILT.clear()
        _BUILT.add(seen)
    return rule


#: The (rule, static choices, structure) whose build has passed (see :func:`make`).
_BUILT: set = set()
_BUILT_MAX = 4096
