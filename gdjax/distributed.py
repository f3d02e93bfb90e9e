"""Several processes, one run: connecting them with JAX's distributed runtime.

Every process runs the same script. :func:`initialize` connects it to the others before
any other JAX call; afterwards ``jax.devices()`` lists the devices of every process, and
``gd.fit(..., mesh=Mesh(np.array(jax.devices()), ("data",)))`` or ``gd.sweep(...,
mesh=Mesh(..., ("settings",)))`` spans them all. Where the three numbers come from, in
order:

1. the arguments;
2. ``GDJAX_NUM_PROCESSES``, ``GDJAX_PROCESS_ID`` and ``JAX_COORDINATOR_ADDRESS`` (what
   ``gdjax launch`` sets, and what any launcher can set);
3. a Slurm job or Open MPI run of more than one task (``SLURM_NTASKS``,
   ``OMPI_COMM_WORLD_SIZE``), or ``cluster=True``: JAX's own detection of the cluster
   (Slurm, Open MPI, Kubernetes, Cloud TPU).

With none of these, :func:`initialize` does nothing: a single process.

On CPU the processes exchange data with gloo (``jax_cpu_collectives_implementation``),
which :func:`initialize` turns on.
"""

from __future__ import annotations

import os

import jax

from gdjax._validate import UsageError

__all__ = ["initialize", "is_main"]


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cluster: bool = False,
) -> None:
    """Connect this process to the others (a no-op for a single process).

    Args:
      coordinator_address: ``"host:port"`` of process 0 (env ``JAX_COORDINATOR_ADDRESS``).
      num_processes: how many processes take part (env ``GDJAX_NUM_PROCESSES``).
      process_id: this process's rank, ``0 … num_processes - 1`` (env ``GDJAX_PROCESS_ID``).
      cluster: without the three numbers, let JAX detect the cluster even outside a
        multi-task Slurm or Open MPI run.
    """
    address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    n = num_processes if num_processes is not None else _env_int("GDJAX_NUM_PROCESSES")
    rank = process_id if process_id is not None else _env_int("GDJAX_PROCESS_ID")
    given = [v is not None for v in (address, n, rank)]
    if any(given) and not all(given):
        raise UsageError(
            "gd.distributed.initialize: give all three of coordinator_address, "
            "num_processes and process_id (or JAX_COORDINATOR_ADDRESS, GDJAX_NUM_PROCESSES "
            "and GDJAX_PROCESS_ID), or none of them on a cluster JAX detects."
        )
    if n == 1 or not (all(given) or cluster or _launched_by_cluster()):
        return
    if n is not None and not 0 <= rank < n:
        raise UsageError(f"`process_id` must be in 0 … {n - 1}, got {rank}.")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if all(given):
        jax.distributed.initialize(address, num_processes=n, process_id=rank)
    else:
        jax.distributed.initialize()


def is_main() -> bool:
    """True in process 0: the one that prints, plots and writes files."""
    return jax.process_index() == 0


def _launched_by_cluster() -> bool:
    return any((_env_int(v) or 1) > 1 for v in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"))


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        msg = f"environment variable {name} must be an integer, got {value!r}."
        raise UsageError(msg) from None
