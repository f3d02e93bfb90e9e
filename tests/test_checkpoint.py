"""Checkpoints: round trips, refusals, and resumed fits that end bit-for-bit identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import gdjax as gd
from gdjax import checkpoint, train

ROOT = Path(__file__).resolve().parents[1]


def tree_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb)
    )


def sample_tree():
    return {
        "params": [{"W": jnp.arange(6.0).reshape(2, 3), "b": jnp.float32(0.5)}],
        "opt": optax.ScaleByAdamState(jnp.int32(3), {"m": jnp.ones(2)}, {"v": jnp.zeros(2)}),
        "half": np.array([1.5, -2.0], ml_dtypes.bfloat16),
        "key": jax.random.key(42),
    }


def test_round_trip(tmp_path):
    tree = sample_tree()
    path = checkpoint.save(tmp_path / "c.npz", tree, {"step": 7})
    back, meta = checkpoint.load(path, like=tree)
    assert meta == {"step": 7}
    assert back["opt"].count == 3 and isinstance(back["opt"], optax.ScaleByAdamState)
    assert back["half"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(np.asarray(back["half"], np.float32), [1.5, -2.0])
    np.testing.assert_array_equal(
        jax.random.key_data(back["key"]), jax.random.key_data(tree["key"])
    )
    assert tree_equal(back["params"], tree["params"])
    flat, _ = checkpoint.load(path)  # no `like`: a flat dict keyed by pytree path
    np.testing.assert_array_equal(flat["['params'][0]['W']"], np.arange(6.0).reshape(2, 3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary left behind
    with np.load(path, allow_pickle=False) as z:  # a plain npz, readable without pickle
        assert "__gdjax_metadata__" in z.files


def test_refusals(tmp_path):
    tree = sample_tree()
    path = checkpoint.save(tmp_path / "c.npz", tree, {"step": 7})
    raw = path.read_bytes()

    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"c\.npz.*corrupt or truncated"):
        checkpoint.load(path, like=tree)

    # flip one byte of W's data: zip's CRC or the SHA-256 must catch it
    i = raw.index(np.arange(6.0, dtype=np.float32).tobytes()) + 5
    path.write_bytes(raw[:i] + bytes([raw[i] ^ 0xFF]) + raw[i + 1 :])
    with pytest.raises(ValueError, match=r"c\.npz"):
        checkpoint.load(path, like=tree)

    path.write_bytes(raw)
    with pytest.raises(ValueError, match=r"\['W'\].*shape \(2, 3\).*expected shape \(3, 2\)"):
        bad = {**tree, "params": [{"W": jnp.zeros((3, 2)), "b": jnp.float32(0)}]}
        checkpoint.load(path, like=bad)
    with pytest.raises(ValueError, match="structure"):
        checkpoint.load(path, like={"params": tree["params"]})

    np.savez(tmp_path / "other.npz", x=np.ones(2))
    with pytest.raises(ValueError, match="not a gdjax checkpoint"):
        checkpoint.load(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError):
        checkpoint.load(tmp_path / "missing.npz")


# ----------------------------------------------------------------------- fit resume


def loss(params, batch):
    X, y = batch
    return jnp.mean((jnp.tanh(X @ params["W"]) @ params["v"] - y) ** 2)


def make_run():
    kx, kw = jax.random.split(jax.random.key(1))
    X = jax.random.normal(kx, (40, 4))
    y = jnp.cos(X[:, 0] - X[:, 1])
    params = {"W": 0.5 * jax.random.normal(kw, (4, 6)), "v": jnp.ones(6) / 6}
    kwargs = dict(steps=60, batch_size=8, key=jax.random.key(5), record_every=2, chunk_size=10)
    return params, (X, y), kwargs


class Interrupt(Exception):
    pass


def test_interrupted_fit_resumes_bit_for_bit(tmp_path, monkeypatch):
    params, data, kw = make_run()
    full = gd.fit(loss, params, gd.optim.adam(0.02), data, trajectory=True, **kw)

    def fit_with_checkpoints():
        opt = gd.optim.adam(0.02)
        return gd.fit(
            loss,
            params,
            opt,
            data,
            trajectory=True,
            checkpoint_dir=tmp_path,
            checkpoint_every=20,
            **kw,
        )

    saves = []
    real_save = checkpoint.save

    def save_then_stop(path, tree, meta):
        real_save(path, tree, meta)
        if path.name != train.CHECKPOINT_NAME:  # a history segment
            return
        saves.append(meta["step"])
        if len(saves) == 2:
            raise Interrupt

    monkeypatch.setattr(checkpoint, "save", save_then_stop)
    with pytest.raises(Interrupt):
        fit_with_checkpoints()
    assert saves == [20, 40]
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert checkpoint.read_metadata(tmp_path / train.CHECKPOINT_NAME)["step"] == 40

    resumed = fit_with_checkpoints()
    assert tree_equal(resumed.params, full.params)
    assert tree_equal(resumed.opt_state, full.opt_state)
    assert tree_equal(resumed.trajectory, full.trajectory)
    np.testing.assert_array_equal(resumed.losses, full.losses)
    assert resumed.losses.shape == (30,)
    # the finished checkpoint answers a third call without running anything
    again = fit_with_checkpoints()
    assert tree_equal(again.params, full.params)


def test_checkpoint_of_another_run_or_corrupt_is_refused_untouched(tmp_path):
    params, data, kw = make_run()
    gd.fit(loss, params, gd.optim.sgd(0.1), data, checkpoint_dir=tmp_path, **kw)
    path = tmp_path / train.CHECKPOINT_NAME
    before = path.read_bytes()

    with pytest.raises(ValueError, match=r"different run.*steps: checkpoint 60, this run 80"):
        gd.fit(
            loss, params, gd.optim.sgd(0.1), data, checkpoint_dir=tmp_path, **{**kw, "steps": 80}
        )
    X, y = data
    with pytest.raises(ValueError, match="data_sha256"):
        gd.fit(loss, params, gd.optim.sgd(0.1), (X + 1, y), checkpoint_dir=tmp_path, **kw)
    # adam is not sgd
    with pytest.raises(ValueError, match=r"optimizer.rule: checkpoint \"gd.optim.sgd"):
        gd.fit(loss, params, gd.optim.adam(0.1), data, checkpoint_dir=tmp_path, **kw)
    assert path.read_bytes() == before

    path.write_bytes(before[:-100])
    with pytest.raises(ValueError, match=r"checkpoint\.npz.*corrupt or truncated"):
        gd.fit(loss, params, gd.optim.sgd(0.1), data, checkpoint_dir=tmp_path, **kw)
    assert path.read_bytes() == before[:-100]


CHILD = textwrap.dedent(
    """
    import sys, time
    import jax, jax.numpy as jnp
    import gdjax as gd
    from gdjax import checkpoint
    from tests.test_checkpoint import loss, make_run

    real_save = checkpoint.save
    def slow_save(*args):  # slows the host loop, not the numbers
        real_save(*args)
        time.sleep(0.3)
    checkpoint.save = slow_save
    params, data, kw = make_run()
    kw["steps"] = 600
    gd.fit(loss, params, gd.optim.adam(0.02), data, checkpoint_dir=sys.argv[1],
           checkpoint_every=10, **kw)
    print("finished")
    """
)


def test_sigkill_then_resume_is_bit_for_bit(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    path = tmp_path / train.CHECKPOINT_NAME
    try:
        deadline = time.monotonic() + 120
        while not path.exists() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        time.sleep(0.5)  # let it get past a few more checkpoints, then kill it mid-flight
        os.kill(child.pid, signal.SIGKILL)
    finally:
        out, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert b"finished" not in out
    step = checkpoint.read_metadata(path)["step"]
    assert 0 < step < 600

    params, data, kw = make_run()
    kw["steps"] = 600
    resumed = gd.fit(
        loss, params, gd.optim.adam(0.02), data, checkpoint_dir=tmp_path, checkpoint_every=10, **kw
    )
    full = gd.fit(loss, params, gd.optim.adam(0.02), data, **kw)
    assert tree_equal(resumed.params, full.params)
    np.testing.assert_array_equal(resumed.losses, full.losses)
