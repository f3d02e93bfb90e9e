"""fit(..., mesh=...) on 4 simulated CPU devices equals the 1-device run.

The device count of a process is fixed when jax starts, so the 4-device run happens in
a subprocess started with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh
    import gdjax as gd

    assert jax.device_count() == 4, jax.devices()

    def loss(params, batch):
        X, y = batch
        z = jnp.tanh(X @ params["W1"] + params["b1"]) @ params["w2"] + params["b2"]
        return jnp.mean((z - y) ** 2)

    kx, kp = jax.random.split(jax.random.key(0))
    X = jax.random.normal(kx, (64, 5))
    y = jnp.sin(X @ jnp.arange(1.0, 6.0))
    k1, k2 = jax.random.split(kp)
    params = {"W1": 0.5 * jax.random.normal(k1, (5, 8)), "b1": jnp.zeros(8),
              "w2": 0.5 * jax.random.normal(k2, (8,)), "b2": jnp.zeros(())}
    mesh = Mesh(np.array(jax.devices()), ("data",))
    out = {}
    for name, kw in {"full": {}, "mini": {"batch_size": 16, "key": jax.random.key(3)}}.items():
        one = gd.fit(loss, params, gd.optim.adam(0.01), (X, y), steps=40, **kw)
        four = gd.fit(loss, params, gd.optim.adam(0.01), (X, y), steps=40, mesh=mesh, **kw)
        leaf = four.params["W1"]
        out[name] = {
            "max_param_diff": max(
                float(jnp.max(jnp.abs(a - b)))
                for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params))
            ),
            "max_loss_rel_diff": float(jnp.max(jnp.abs(one.losses - four.losses) / one.losses)),
            "loss_drop": float(one.losses[-1] / one.losses[0]),
            "devices": len(leaf.sharding.device_set),
        }
    try:
        gd.fit(loss, params, gd.optim.adam(0.01), (X[:62], y[:62]), steps=2, mesh=mesh)
    except ValueError as e:
        out["error"] = str(e)
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def four_devices():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["full", "mini"])
def test_four_devices_equal_one(four_devices, mode):
    r = four_devices[mode]
    assert r["devices"] == 4  # the parameters really live on the 4-device mesh
    assert r["loss_drop"] < 0.5  # the run learned
    assert r["max_param_diff"] < 1e-5
    assert r["max_loss_rel_diff"] < 1e-5


def test_indivisible_examples_are_refused(four_devices):
    assert "m=62" in four_devices["error"] and "4 devices" in four_devices["error"]
