"""Every model of the source documents, as pure functions with a hand-written backprop.

``REGISTRY`` maps a document id to its :class:`Model`:

==== ======================================================= ==================
id   model                                                   module
==== ======================================================= ==================
G1   computation graph J = 3(a + b·c)                        ``models.graph``
G2   logistic regression, one example, two features          ``models.logistic``
G3   logistic regression, m examples                         ``models.logistic``
R1   univariate linear regression                            ``models.regression``
R2   multivariate linear regression                          ``models.regression``
R3   two stacked linear layers                               ``models.regression``
R4   two layers with a sigmoid                               ``models.regression``
N1   the 2-2-2-1 sigmoid network worked by hand              ``models.network``
S1   f(x) = √(x² + exp(x²)) + cos(x² + exp(x²))              ``models.scalar``
D1   K-layer fully connected network                         ``models.mlp``
C1   chain h(g(f(x, a), b), c)                               ``models.chain``
C2   fan-out through a multiply gate                         ``models.chain``
==== ======================================================= ==================
"""

from __future__ import annotations

from gdjax._validate import UsageError
from gdjax.models import chain, graph, logistic, mlp, network, regression, scalar
from gdjax.models._base import Backprop, Model, check_layout

__all__ = ["REGISTRY", "Backprop", "Model", "check_layout", "get"]

REGISTRY: dict[str, Model] = {
    m.id: m
    for module in (graph, logistic, regression, network, scalar, mlp, chain)
    for m in module.MODELS
}


def get(model_id: str) -> Model:
    """The registry model ``model_id`` (case-insensitive), with a clear error if unknown."""
    if not isinstance(model_id, str):
        raise UsageError(f"`model_id` must be a string such as 'G1', got {model_id!r}.")
    key = model_id.strip().upper()
    if key not in REGISTRY:
        raise UsageError(
            f"Unknown model id {model_id!r}. Known models: {', '.join(REGISTRY)}. "
            f"See `gdjax verify --help` or docs/models/."
        )
    return REGISTRY[key]
