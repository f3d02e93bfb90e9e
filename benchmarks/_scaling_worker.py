"""Worker of the ``scaling`` section: one timed sweep, in every process of a launch.

    python _scaling_worker.py K STEPS OUT

Times ``gd.sweep`` of K learning rates on N1 (2-2-2-1, its document data) over every
device of every process (a ``"settings"`` mesh): the first call (compile included) and a
second one with new rates. Process 0 writes the two times to OUT (JSON).
"""

import json
import sys
import time

import gdjax as gd

gd.distributed.initialize()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402


def main(k: int, steps: int, out: str) -> None:
    model = gd.models.get("N1")
    params, batch = model.example()
    mesh = Mesh(np.array(jax.devices()), ("settings",))
    times = []
    for lo in (-3.0, -2.5):  # the second call: new rates, same program
        opt = gd.optim.sgd(jnp.logspace(lo, 0.0, k))
        start = time.perf_counter()
        res = gd.sweep(model.loss, params, opt, batch, steps=steps, mesh=mesh)
        np.asarray(res.final_loss)
        times.append(time.perf_counter() - start)
    if jax.process_index() == 0:
        with open(out, "w") as f:
            json.dump({"cold_s": times[0], "warm_s": times[1], "devices": jax.device_count()}, f)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
