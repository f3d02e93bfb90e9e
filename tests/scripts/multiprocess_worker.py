"""A worker of the two-process tests (tests/test_multiprocess.py); every process runs it.

    python multiprocess_worker.py MODE OUT [CHECKPOINT_DIR]

MODE ``compare``: fit (full and mini-batch) and sweep (``"settings"`` and
``"settings"×"data"`` meshes) over every process's devices, each against the same call on
this process's first device alone; process 0 writes the differences to OUT (JSON).
MODE ``checkpoint``: a checkpointed data-parallel fit; process 0 writes its params and
losses to OUT (``.npz``).
"""

import json
import sys
import time

import gdjax as gd

gd.distributed.initialize()  # from the environment gdjax launch / the test sets

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402


def loss(params, batch):
    X, y = batch
    z = jnp.tanh(X @ params["W"] + params["b"]) @ params["v"]
    return jnp.mean((z - y) ** 2)


def slow_loss(params, batch):  # 1 ms a step: time for the test to kill a run midway
    jax.debug.callback(lambda: time.sleep(0.001))
    return loss(params, batch)


rng = np.random.default_rng(0)
X = rng.normal(size=(64, 5)).astype(np.float32)
y = np.sin(X @ np.arange(1.0, 6.0, dtype=np.float32)).astype(np.float32)
params = {
    "W": (0.5 * rng.normal(size=(5, 8))).astype(np.float32),
    "b": np.zeros(8, np.float32),
    "v": (0.3 * rng.normal(size=8)).astype(np.float32),
}


def diff(a, b) -> float:
    """The largest |a - b| / max(|b|, 1) over every leaf (equal NaNs and infinities: 0)."""

    def one(x, z):
        x, z = np.asarray(x, np.float64), np.asarray(z, np.float64)
        same = (np.isnan(x) & np.isnan(z)) | (x == z)
        with np.errstate(invalid="ignore"):
            err = np.where(same, 0.0, np.abs(x - z) / np.maximum(np.abs(z), 1.0))
        return float(np.max(err)) if err.size else 0.0

    return max(one(x, z) for x, z in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def compare(out_path: str) -> None:
    devices = np.array(jax.devices())
    data_mesh = Mesh(devices, ("data",))
    out = {"devices": len(devices), "processes": jax.process_count()}
    refs = {}
    for name, kw in {"full": {}, "mini": {"batch_size": 16, "key": 3}}.items():
        one = refs[name] = gd.fit(loss, params, gd.optim.adam(0.01), (X, y), steps=60, **kw)
        many = gd.fit(loss, params, gd.optim.adam(0.01), (X, y), steps=60, mesh=data_mesh, **kw)
        out[f"fit_{name}"] = {
            "params": diff(one.params, many.params),
            "losses": diff(one.losses, many.losses),
        }
    # a global array built from each process's own rows, instead of the full data
    rows = slice(32 * jax.process_index(), 32 * (jax.process_index() + 1))
    sharding = NamedSharding(data_mesh, PartitionSpec("data"))
    local = jax.make_array_from_process_local_data
    global_data = (local(sharding, X[rows]), local(sharding, y[rows]))
    one = refs["mini"]  # the same run on one device
    many = gd.fit(
        loss,
        params,
        gd.optim.adam(0.01),
        global_data,
        steps=60,
        mesh=data_mesh,
        batch_size=16,
        key=3,
    )
    out["fit_global_array"] = {
        "params": diff(one.params, many.params),
        "losses": diff(one.losses, many.losses),
    }
    rates = jnp.array([0.01, 0.05, 1e4, 0.5, 0.1])  # x 2 seeds: 10 runs, padded to 12 on 4
    one = gd.sweep(loss, params, gd.optim.sgd(rates), (X, y), steps=50, batch_size=16, seeds=2)
    meshes = {
        "settings": Mesh(devices, ("settings",)),
        "settings_data": Mesh(devices.reshape(2, -1), ("settings", "data")),
    }
    ok = ~np.asarray(one.diverged)
    assert 0 < ok.sum() < ok.size
    for name, mesh in meshes.items():
        many = gd.sweep(
            loss, params, gd.optim.sgd(rates), (X, y), steps=50, batch_size=16, seeds=2, mesh=mesh
        )
        out[f"sweep_{name}"] = {
            # a diverged run's last finite params blow rounding up: compare the others
            "params": diff(*(jax.tree.map(lambda p: p[ok], r.params) for r in (one, many))),
            "losses": diff(one.losses[ok], many.losses[ok]),
            "diverged_same": bool((one.diverged == many.diverged).all()),
            "diverged_at_same": bool((one.diverged_at == many.diverged_at).all()),
            "best_same": one.best_index == many.best_index,
        }
    if jax.process_index() == 0:
        with open(out_path, "w") as f:
            json.dump(out, f)


def checkpoint(out_path: str, *directories: str) -> None:
    """The same checkpointed run in each directory (resuming where one holds a
    checkpoint); process 0 saves the results as ``<out_path>.<i>.npz``."""
    mesh = Mesh(np.array(jax.devices()), ("data",))
    for i, directory in enumerate(directories):
        res = gd.fit(
            slow_loss,
            params,
            gd.optim.adam(0.01),
            (X, y),
            steps=120,
            batch_size=16,
            key=1,
            mesh=mesh,
            checkpoint_dir=directory,
            checkpoint_every=20,
            chunk_size=20,
        )
        if jax.process_index() == 0:
            arrays = {k: np.asarray(v) for k, v in res.params.items()}
            np.savez(f"{out_path}.{i}.npz", losses=res.losses, **arrays)


if __name__ == "__main__":
    if sys.argv[1] == "compare":
        compare(sys.argv[2])
    else:
        checkpoint(sys.argv[2], *sys.argv[3:])
