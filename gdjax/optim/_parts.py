"""An optimizer split for the training engine: a hashable static part and array leaves.

:func:`partition` splits any optimizer, :func:`combine` rebuilds it from (possibly
traced) leaves:

* a ``gd.optim`` rule: its name, options and leaf structure (:class:`RuleStatic`, by
  value), and the leaves ``{"hyperparams": ..., "complements": ...}``;
* a ``gd.optim.chain``: the static parts of its members in order (:class:`ChainStatic`),
  and a tuple of the members' leaves (``()`` for a member that is not a rule);
* any other transformation (optax's own, an ``optax.chain`` of gd rules, whose closures
  hide their numbers): itself, compared by identity (:class:`Opaque`), and no leaves.

So two optimizers whose static parts are equal run the same compiled program.
:func:`num_settings`, :func:`setting` and :func:`settings` read the K settings of a rule
or chain built with 1-D arrays.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import jax
import numpy as np

from gdjax._validate import UsageError, check_int, is_concrete
from gdjax.optim import _chain, _split
from gdjax.optim._chain import Chain
from gdjax.optim._hyper import ById, path_name, show, thaw
from gdjax.optim._schedule import PytreeSchedule
from gdjax.optim._split import Rule

__all__ = [
    "ChainStatic",
    "Opaque",
    "RuleStatic",
    "combine",
    "num_settings",
    "opaque_objects",
    "partition",
    "setting",
    "settings",
]


class RuleStatic:
    """The static part of a rule: name, options and leaf structure (hashable, by value)."""

    __slots__ = ("key", "name", "static")

    def __init__(self, name: str, static: tuple, treedef: Any) -> None:
        self.name, self.static, self.key = name, static, (name, static, treedef)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RuleStatic) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        # a schedule's kind and options live in the leaves' structure: show them too
        numbers = jax.tree.unflatten(self.key[2], [0] * self.key[2].num_leaves)["hyperparams"]
        shown = [f"{a}={v.outline()}" for a, v in numbers.items() if isinstance(v, PytreeSchedule)]
        shown += [f"{a}={show(thaw(v))}" for a, v in self.static]
        return f"gd.optim.{self.name}({', '.join(shown)})"


class ChainStatic:
    """The static part of a chain: its members' static parts, in order (by value)."""

    __slots__ = ("members",)

    def __init__(self, members: tuple) -> None:
        self.members = members

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChainStatic) and other.members == self.members

    def __hash__(self) -> int:
        return hash(self.members)

    def __repr__(self) -> str:
        return f"gd.optim.chain({', '.join(repr(m) for m in self.members)})"


class Opaque(ById):
    """Any other transformation as a static part: itself, compared and hashed by identity."""

    def __repr__(self) -> str:
        return f"{type(self.obj).__module__}.{type(self.obj).__qualname__} (opaque)"


def partition(opt: Any) -> tuple[Any, Any]:
    """``(static, leaves)`` of an optimizer, with ``combine(static, leaves)`` the same one.

    A gd.optim rule: ``static`` (hashable, equal for two rules that differ only in their
    numbers) and ``leaves``, a dict ``{"hyperparams": ..., "complements": ...}`` of
    arrays. A gd.optim.chain: the members' parts, a tuple each. Any other transformation:
    ``static`` wraps it (compared by identity), no leaves.
    """
    if isinstance(opt, Rule):
        core = opt._core
        leaves = {"hyperparams": dict(core.hyperparams), "complements": dict(core.complements)}
        if core.parts_ is None:  # the leaves' structure is fixed: one static part per rule
            core.parts_ = RuleStatic(core.name, core.static, jax.tree.structure(leaves))
        return core.parts_, leaves
    if isinstance(opt, Chain):
        parts = [partition(m) for m in opt.members]
        return ChainStatic(tuple(s for s, _ in parts)), tuple(leaves for _, leaves in parts)
    return Opaque(opt), ()


def combine(static: Any, leaves: Any) -> Any:
    """The optimizer with these leaves (possibly traced): the inverse of :func:`partition`."""
    if isinstance(static, Opaque):
        return static.obj
    if isinstance(static, ChainStatic):
        if not isinstance(leaves, tuple) or len(leaves) != len(static.members):
            raise UsageError(
                f"`leaves` must be the tuple of {len(static.members)} members' leaves that "
                f"gd.optim.partition returned for this chain."
            )
        return _chain._new(tuple(combine(s, lv) for s, lv in zip(static.members, leaves)))
    if not isinstance(static, RuleStatic):
        raise UsageError(f"`static` must come from gd.optim.partition, got {static!r}.")
    return _split._new(static.name, leaves["hyperparams"], leaves["complements"], static.static)


def opaque_objects(static: Any) -> tuple:
    """The transformations that a static part holds by identity (none for a rule)."""
    if isinstance(static, Opaque):
        return (static.obj,)
    if isinstance(static, ChainStatic):
        return tuple(o for m in static.members for o in opaque_objects(m))
    return ()


_SETTINGS_TYPES = (Rule, Chain, PytreeSchedule)  # a tuple: `A | B` builds a union per call


def num_settings(opt: Any) -> int | None:
    """K for a rule, chain or schedule built with 1-D arrays of K settings, else None."""
    if isinstance(opt, _SETTINGS_TYPES):
        return opt.num_settings
    return None


def setting(opt: Rule | Chain, i: int) -> Rule | Chain:
    """Setting ``i`` of a rule (or chain) of K settings, as one of one setting."""
    k = num_settings(opt)
    if k is None:
        raise UsageError("`opt` holds one setting: it is its own setting 0.")
    i = check_int("i", i, minimum=0)
    if i >= k:
        what = "rule" if isinstance(opt, Rule) else "chain"
        raise UsageError(f"`i` must be below the {what}'s {k} settings, got {i}.")
    return jax.tree.map(lambda x: np.asarray(x[i]) if isinstance(x, np.ndarray) else x[i], opt)


def _named(rule: Rule, prefix: str = "") -> dict[str, Any]:
    flat = jax.tree_util.tree_flatten_with_path(rule._core.hyperparams)[0]
    return {prefix + path_name(path): leaf for path, leaf in flat}


def member_labels(chain: Chain) -> list[str | None]:
    """The name of each rule member of a chain in :func:`settings`: its rule's name
    (``"adam"``), with its position when the chain holds that rule twice (``"sgd[2]"``);
    None for a member that is not a rule."""
    names = [m.name if isinstance(m, Rule) else None for m in chain.members]
    twice = {n for n, c in Counter(n for n in names if n is not None).items() if c > 1}
    return [None if n is None else (f"{n}[{i}]" if n in twice else n) for i, n in enumerate(names)]


def settings(opt: Any) -> dict[str, Any]:
    """The swept hyperparameters of a rule or chain of K settings, name -> ``(K,)`` array.

    Those whose values differ between settings (or are traced); all of them when every
    setting is the same. A rule's are named by argument (``"learning_rate"``,
    ``"learning_rate.init_value"``), a chain's by member and argument
    (``"adam.learning_rate"``, ``"clip_by_global_norm.max_norm"``; see
    :func:`member_labels`). ``{}`` for one setting or another transformation.
    """
    if num_settings(opt) is None or not isinstance(opt, Rule | Chain):
        return {}
    if isinstance(opt, Rule):
        if opt._core.settings_ is not None:
            return dict(opt._core.settings_)
        named = _named(opt)
    else:
        named = {}
        for label, m in zip(member_labels(opt), opt.members):
            if label is not None:
                named.update(_named(m, label + "."))
    varying = {n: v for n, v in named.items() if not is_concrete(v) or np.ptp(np.asarray(v)) != 0}
    varying = varying or named
    if isinstance(opt, Rule) and all(
        isinstance(v, jax.Array) and is_concrete(v) for v in jax.tree.leaves(opt)
    ):  # jax.Arrays cannot change: remember which of them vary
        opt._core.settings_ = varying
    return dict(varying)
