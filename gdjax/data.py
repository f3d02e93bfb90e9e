r"""Data for the experiments: small real datasets that scikit-learn ships, and synthetic data.

Real data (bundled with scikit-learn, no download; ``pip install gdjax[data]``):

=======================  ==========  =====================================================
loader                   shape       target
=======================  ==========  =====================================================
``breast_cancer()``      (569, 30)   0/1 (1 = benign); ``features=`` picks columns by name
``diabetes()``           (442, 10)   disease progression after one year, standardised
``digits()``             (1797, 64)  the digit 0…9, one-hot (1797, 10) by default
=======================  ==========  =====================================================

Every feature column is standardised, :math:`x \mapsto (x - \bar x)/s` with the population
standard deviation :math:`s` (columns that never vary, such as the digits' border pixels,
are only centred). Arrays are float32, examples on axis 0 (batch-first).

Synthetic data is drawn from an explicit ``jax.random`` key, so the same key gives the
same data:

* ``linear_regression(key, m, n)``: :math:`y = Xw + b + \varepsilon`,
* ``logistic_classification(key, m, n)``: :math:`y \sim \mathrm{Bernoulli}(\sigma(Xw + b))`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax._validate import check_positive

__all__ = [
    "Dataset",
    "breast_cancer",
    "diabetes",
    "digits",
    "linear_regression",
    "load",
    "logistic_classification",
    "standardize",
]


class Dataset(NamedTuple):
    """A dataset: ``X, y, *_ = ds`` or ``ds.X, ds.y``.

    Attributes:
      X: features, shape ``(m, n)``, float32, standardised where the loader says so.
      y: targets, shape ``(m,)`` (or ``(m, k)`` for one-hot labels), float32.
      name: where it comes from, e.g. ``"breast_cancer"``.
      feature_names: one name per column of ``X``.
    """

    X: jax.Array
    y: jax.Array
    name: str
    feature_names: tuple[str, ...]


def standardize(x: Any, *, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Centre and scale ``x`` along ``axis``: :math:`(x - \bar x)/s`.

    Returns ``(z, mean, scale)`` with ``z = (x - mean) / scale``. ``scale`` is the
    population standard deviation, replaced by 1 where it is 0 (a constant column is
    centred, not divided by zero). Computed in float64 with NumPy.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError("`x` must have at least one axis to standardise along; got a scalar.")
    mean = x.mean(axis=axis, keepdims=True)
    scale = x.std(axis=axis, keepdims=True)
    scale = np.where(scale > 0, scale, 1.0)
    return (x - mean) / scale, np.squeeze(mean, axis), np.squeeze(scale, axis)


def _sklearn_datasets() -> Any:
    try:
        import sklearn.datasets
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "gdjax's real datasets come bundled with scikit-learn, which is not installed. "
            "Install it with: pip install 'gdjax[data]'"
        ) from err
    return sklearn.datasets


def _as_float32(*arrays: np.ndarray) -> tuple[jax.Array, ...]:
    return tuple(jnp.asarray(a, dtype=jnp.float32) for a in arrays)


def breast_cancer(features: Sequence[str | int] | None = None) -> Dataset:
    """The Wisconsin breast-cancer data: 569 tumours, 30 features, y = 1 for benign.

    Args:
      features: the columns to keep, by name (``"mean radius"``) or index; all 30 if None.
        All 30 together separate the two classes exactly, so an unregularised logistic
        regression has no finite minimiser; a few weakly correlated columns do not.

    Returns:
      A :class:`Dataset` with standardised ``X`` of shape ``(569, len(features))`` and
      0/1 ``y`` of shape ``(569,)``.
    """
    raw = _sklearn_datasets().load_breast_cancer()
    names = [str(f) for f in raw.feature_names]
    columns = _pick_columns("features", features, names)
    x, _, _ = standardize(raw.data[:, columns])
    X, y = _as_float32(x, raw.target)
    return Dataset(X, y, "breast_cancer", tuple(names[c] for c in columns))


def _pick_columns(arg: str, wanted: Sequence[str | int] | None, names: list[str]) -> list[int]:
    if wanted is None:
        return list(range(len(names)))
    if isinstance(wanted, str | int):
        raise TypeError(f"`{arg}` must be a list of names or indices, e.g. ['mean radius'].")
    columns = []
    for f in wanted:
        if isinstance(f, str):
            if f not in names:
                raise ValueError(f"`{arg}`: unknown feature {f!r}. Known: {', '.join(names)}.")
            columns.append(names.index(f))
        elif isinstance(f, int | np.integer) and 0 <= int(f) < len(names):
            columns.append(int(f))
        else:
            raise ValueError(f"`{arg}`: {f!r} is not a name or an index in [0, {len(names)}).")
    if not columns or len(set(columns)) != len(columns):
        raise ValueError(f"`{arg}` must name at least one column, each once; got {wanted!r}.")
    return columns


def diabetes(*, standardize_target: bool = True) -> Dataset:
    """The diabetes data: 442 patients, 10 standardised features, a regression target.

    Args:
      standardize_target: also centre and scale ``y`` (so a mean squared error of 1 is
        the error of predicting the mean). Otherwise ``y`` is in the original units.
    """
    raw = _sklearn_datasets().load_diabetes(scaled=False)
    x, _, _ = standardize(raw.data)
    y = standardize(raw.target)[0] if standardize_target else raw.target
    X, y = _as_float32(x, y)
    return Dataset(X, y, "diabetes", tuple(str(f) for f in raw.feature_names))


def digits(*, one_hot: bool = True, n_class: int = 10) -> Dataset:
    """The 8×8 handwritten digits: 1797 images as 64 standardised pixel features.

    Args:
      one_hot: ``y`` as one-hot rows of shape ``(m, n_class)`` (for a squared loss on
        ``n_class`` outputs); otherwise the digit itself, shape ``(m,)``.
      n_class: keep the digits ``0 … n_class - 1`` only (2 to 10).
    """
    if not isinstance(n_class, int) or not 2 <= n_class <= 10:
        raise ValueError(f"`n_class` must be an integer from 2 to 10, got {n_class!r}.")
    raw = _sklearn_datasets().load_digits(n_class=n_class)
    x, _, _ = standardize(raw.data)
    y = np.eye(n_class)[raw.target] if one_hot else raw.target
    X, y = _as_float32(x, y)
    return Dataset(X, y, "digits", tuple(f"pixel_{i}_{j}" for i in range(8) for j in range(8)))


_LOADERS = {"breast_cancer": breast_cancer, "diabetes": diabetes, "digits": digits}


def load(name: str, **kwargs: Any) -> Dataset:
    """A real dataset by name: ``"breast_cancer"``, ``"diabetes"`` or ``"digits"``."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in _LOADERS:
        raise ValueError(f"Unknown dataset {name!r}. Known: {', '.join(_LOADERS)}.")
    return _LOADERS[key](**kwargs)


def _check_sizes(m: int, n: int) -> None:
    for arg, v in (("m", m), ("n", n)):
        if not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"`{arg}` must be a positive integer, got {v!r}.")


def linear_regression(
    key: jax.Array,
    m: int,
    n: int = 1,
    *,
    w: Any = None,
    b: float = 0.5,
    noise: float = 0.5,
    x_mean: float = 0.0,
) -> Dataset:
    r"""Synthetic regression data :math:`y = Xw + b + \varepsilon`.

    :math:`X_{ij} \sim N(\text{x_mean}, 1)` (an off-centre ``x`` couples ``w`` and ``b``:
    the loss's contours become long, tilted ellipses),
    :math:`\varepsilon_i \sim N(0, \text{noise}^2)`, and :math:`w_j \sim N(0, 1)` unless
    ``w`` is given (shape ``(n,)``).
    """
    _check_sizes(m, n)
    check_positive("noise", noise, allow_zero=True)
    k_x, k_w, k_e = jax.random.split(key, 3)
    X = jax.random.normal(k_x, (m, n), jnp.float32) + jnp.float32(x_mean)
    w = jax.random.normal(k_w, (n,), jnp.float32) if w is None else jnp.asarray(w, jnp.float32)
    if w.shape != (n,):
        raise ValueError(f"`w` must have shape ({n},) to match n={n}, got {w.shape}.")
    y = X @ w + jnp.float32(b) + jnp.float32(noise) * jax.random.normal(k_e, (m,), jnp.float32)
    return Dataset(X, y, "linear_regression", tuple(f"x{j + 1}" for j in range(n)))


def logistic_classification(
    key: jax.Array, m: int, n: int = 2, *, w: Any = None, b: float = 0.0
) -> Dataset:
    r"""Synthetic 0/1 labels :math:`y_i \sim \mathrm{Bernoulli}(\sigma(x_i \cdot w + b))`.

    :math:`X_{ij} \sim N(0, 1)` and :math:`w_j \sim N(0, 2^2)` unless ``w`` is given.
    """
    _check_sizes(m, n)
    k_x, k_w, k_y = jax.random.split(key, 3)
    X = jax.random.normal(k_x, (m, n), jnp.float32)
    if w is None:
        w = 2 * jax.random.normal(k_w, (n,), jnp.float32)
    w = jnp.asarray(w, jnp.float32)
    if w.shape != (n,):
        raise ValueError(f"`w` must have shape ({n},) to match n={n}, got {w.shape}.")
    p = jax.nn.sigmoid(X @ w + jnp.float32(b))
    y = jax.random.bernoulli(k_y, p).astype(jnp.float32)
    return Dataset(X, y, "logistic_classification", tuple(f"x{j + 1}" for j in range(n)))
