r"""See inside training: learning-rate finder, curvature, gradient flow, loss landscapes.

* :func:`lr_find` (``gd.lr_find``): a learning-rate range test, every rate its own run,
  all runs one vmapped program; a suggestion below the divergence edge.
* :func:`sharpness` (``gd.sharpness``): :math:`\lambda_{\max}` of the Hessian by Lanczos
  on Hessian-vector products (``jax.jvp`` of ``jax.grad``), never forming the Hessian;
  :func:`hessian_eigs` (top-k pairs), :func:`spectral_density` (stochastic Lanczos
  quadrature).
* Monitors for ``gd.fit(..., monitor=...)``, evaluated inside the compiled loop at the
  recorded steps: :func:`gradient_flow` (per-leaf gradient norms and relative updates),
  :func:`sharpness_monitor` (the sharpness on the step's batch).
* :func:`nonfinite_origin`: the first non-finite intermediate of a loss, by ``gd.trace``.
* Landscapes: :func:`landscape` on lines and planes through the parameters, along
  :func:`random_directions` (filter-normalised, Li et al. 2018) or the
  :func:`pca_directions` of a recorded trajectory.

docs/diagnostics.md shows each with its pictures.
"""

from gdjax.diagnostics.flow import (
    NonFiniteOrigin,
    gradient_flow,
    leaf_names,
    nonfinite_origin,
    plot_flow,
)
from gdjax.diagnostics.landscape import (
    Plane,
    filter_normalized,
    landscape,
    pca_directions,
    project,
    random_directions,
)
from gdjax.diagnostics.lr_find import LRFindResult, lr_find
from gdjax.diagnostics.sharpness import (
    Density,
    SharpnessMonitor,
    hessian_eigs,
    hvp,
    sharpness,
    sharpness_monitor,
    spectral_density,
)

__all__ = [
    "Density",
    "LRFindResult",
    "NonFiniteOrigin",
    "Plane",
    "SharpnessMonitor",
    "filter_normalized",
    "gradient_flow",
    "hessian_eigs",
    "hvp",
    "landscape",
    "leaf_names",
    "lr_find",
    "nonfinite_origin",
    "pca_directions",
    "plot_flow",
    "project",
    "random_directions",
    "sharpness",
    "sharpness_monitor",
    "spectral_density",
]
