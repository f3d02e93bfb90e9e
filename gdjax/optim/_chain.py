r"""``chain``: transformations applied one after the other, as a pytree of its members.

.. math::  u = T_k(\ldots T_2(T_1(g)))

:func:`chain` returns a :class:`Chain`, an ``optax.GradientTransformationExtraArgs``
whose state is a :class:`ChainState` (member ``i``'s state at ``state[i]``). It is also a
JAX pytree: each member that is a ``gd.optim`` rule (:class:`~gdjax.optim.Rule`) is a
subtree, so the chain's leaves are its rules' numeric hyperparameters; any other member
(an optax transformation, an ``optax.chain``, a transform of
:mod:`gdjax.optim.transforms`) is static, compared by identity. So
``chain(clip_by_global_norm(1.0), adam(lr))`` passed to ``jax.jit`` (or to ``gd.fit``)
compiles once whatever ``lr`` and the threshold are, and a chain whose rules hold K
settings is swept by ``gd.sweep`` or ``jax.vmap``.

A chain inside a chain is spliced in (``chain(chain(a, b), c)`` is ``chain(a, b, c)``:
the same updates, one flat state).
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from gdjax._validate import UsageError
from gdjax.optim._hyper import ById, broadcast_settings, settings_count
from gdjax.optim._split import Rule
from gdjax.optim._util import check_state

__all__ = ["Chain", "ChainState", "chain"]


class ChainState(tuple):
    """The states of a chain's transforms, in order: ``state[i]`` belongs to transform i."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"ChainState{tuple.__repr__(self)}"


jax.tree_util.register_pytree_with_keys(
    ChainState,
    lambda s: (tuple((jax.tree_util.SequenceKey(i), c) for i, c in enumerate(s)), None),
    lambda _, children: ChainState(children),
    flatten_func=lambda s: (tuple(s), None),
)


class _ChainCore:
    """A chain's members; ``init``/``update`` are its bound methods."""

    __slots__ = ("members",)

    def __init__(self, members: tuple) -> None:
        self.members = members

    def __getstate__(self) -> tuple:
        return self.members

    def __setstate__(self, state: tuple) -> None:
        self.members = state

    def _check_one_setting(self) -> None:
        k = _count(self.members)
        if k is not None:
            raise UsageError(
                f"this gd.optim.chain holds {k} settings of its rules' hyperparameters, so it "
                f"cannot run on its own. Run them together with gd.sweep, or jax.vmap a "
                f"function of it over axis 0; take one setting with gd.optim.setting(opt, i)."
            )

    def init(self, params: Any) -> ChainState:
        self._check_one_setting()
        return ChainState(t.init(params) for t in self.members)

    def update(self, updates: Any, state: Any, params: Any = None, **extra_args: Any):
        self._check_one_setting()
        check_state(state, ChainState, "this chain")
        if len(state) != len(self.members):
            raise UsageError(
                f"`state` has {len(state)} parts but this chain has {len(self.members)} "
                f"transforms. Pass the state made by this optimizer's `init(params)`."
            )
        new_state = []
        for t, inner in zip(self.members, state):
            if isinstance(t, optax.GradientTransformationExtraArgs):
                updates, inner = t.update(updates, inner, params, **extra_args)
            else:
                updates, inner = t.update(updates, inner, params)
            new_state.append(inner)
        return updates, ChainState(new_state)


class Chain(optax.GradientTransformationExtraArgs):
    """``gd.optim.chain(*transforms)``: an optax transformation and a pytree of its rules.

    ``members`` are the transforms in order; ``num_settings`` is the common K of its
    rules' settings (None for one setting).
    """

    __slots__ = ()

    @property
    def _core(self) -> _ChainCore:
        core = getattr(self.init, "__self__", None)
        if not isinstance(core, _ChainCore):
            raise UsageError("this Chain was not built by gd.optim.chain.")
        return core

    @property
    def members(self) -> tuple:
        return self._core.members

    @property
    def num_settings(self) -> int | None:
        return _count(self.members)

    def __repr__(self) -> str:
        try:
            members = self.members
        except UsageError:
            return super().__repr__()
        return f"gd.optim.chain({', '.join(_member_repr(m) for m in members)})"


def _member_repr(t: Any) -> str:
    if isinstance(t, Rule | Chain):
        return repr(t)
    return f"{type(t).__module__}.{type(t).__qualname__}(...)"


def _new(members: tuple) -> Chain:
    core = _ChainCore(tuple(members))
    return Chain(core.init, core.update)


def _count(members: tuple) -> int | None:
    """K of the rule members (they agree once built by :func:`chain`)."""
    ks = [settings_count(m) for m in members if isinstance(m, Rule)]
    return next((k for k in ks if k is not None), None)


def _flatten_with_keys(c: Chain):
    members = c.members
    children = tuple(
        (jax.tree_util.SequenceKey(i), m) for i, m in enumerate(members) if isinstance(m, Rule)
    )
    return children, _aux(members)


def _aux(members: tuple) -> tuple:
    return tuple(None if isinstance(m, Rule) else ById(m) for m in members)


def _unflatten(aux: tuple, children: tuple) -> Chain:
    rules = iter(children)
    return _new(tuple(next(rules) if a is None else a.obj for a in aux))


jax.tree_util.register_pytree_with_keys(
    Chain,
    _flatten_with_keys,
    _unflatten,
    flatten_func=lambda c: (
        tuple(m for m in c.members if isinstance(m, Rule)),
        _aux(c.members),
    ),
)


def chain(*transforms: optax.GradientTransformation) -> Chain:
    r"""Apply ``transforms`` one after the other: :math:`u \leftarrow T_k(\ldots T_1(g))`.

    Each transform is an ``optax.GradientTransformation``: a ``gd.optim`` rule (its
    numbers become the chain's leaves), a chain (spliced in), or any other (static, by
    identity). Rules of K settings make a chain of K settings: every rule of the chain
    must hold K, or one setting (broadcast to K); two different K's are refused.
    """
    members: list = []
    for i, t in enumerate(transforms):
        if not isinstance(t, optax.GradientTransformation):
            raise UsageError(
                f"`transforms[{i}]` is a {type(t).__name__}, not an optax.GradientTransformation. "
                f"Pass transformations, e.g. gd.optim.chain(gd.optim.clip_by_global_norm(1.0), "
                f"gd.optim.adam(1e-3)); call a rule function first (adam(1e-3), not adam)."
            )
        members.extend(t.members if isinstance(t, Chain) else [t])
    k, first = None, None
    for i, m in enumerate(members):
        km = settings_count(m) if isinstance(m, Rule) else None
        if km is None:
            continue
        if k is None:
            k, first = km, (i, m)
        elif km != k:
            raise UsageError(
                f"the chain's member {first[0]} ({first[1]!r}) holds {k} settings but member "
                f"{i} ({m!r}) holds {km}: the rules of one chain must hold the same number K of "
                f"settings, or one (broadcast to K)."
            )
    if k is not None:
        members = [broadcast_settings(m, k) if isinstance(m, Rule) else m for m in members]
    return _new(tuple(members))
