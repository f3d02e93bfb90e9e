"""Two real processes on 127.0.0.1, connected by jax.distributed (gloo), 2 CPU devices each.

What one process on one device computes, two processes on four devices compute too:
data-parallel fit (full batch and mini-batches), sweeps split over a ``"settings"`` axis
(and a ``"settings"×"data"`` mesh), and a checkpointed run killed with SIGKILL in every
process and resumed, bit-identical to the uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gdjax.train import CHECKPOINT_NAME

WORKER = Path(__file__).resolve().parent / "scripts" / "multiprocess_worker.py"
TIMEOUT = 240  # seconds: nothing may hang the suite


def _env(rank: int, port: int) -> dict[str, str]:
    from gdjax.cli.launch import environment

    return {**environment(rank, 2, port, devices=2), "JAX_PLATFORMS": "cpu"}


def _start(args: list[str], port: int) -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            env=_env(rank, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]


def _finish(procs: list[subprocess.Popen]) -> None:
    try:
        outs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]


def _port() -> int:
    from gdjax.cli.launch import free_port

    return free_port()


def test_launcher_runs_fit_and_sweeps_across_two_processes_equal_to_one_device(tmp_path):
    out = tmp_path / "compare.json"
    cmd = [sys.executable, "-m", "gdjax.cli", "launch", "-n", "2", "--devices", "2"]
    cmd += ["--timeout", str(TIMEOUT), str(WORKER), "compare", str(out)]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT + 30)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[0] " in proc.stdout and "[1] " in proc.stdout  # both ranks' output, gathered
    got = json.loads(out.read_text())
    assert got["devices"] == 4 and got["processes"] == 2
    # a data-parallel sum is ordered differently: float32 rounding of 60 Adam steps
    for name in ("fit_full", "fit_mini", "fit_global_array"):
        assert got[name]["params"] < 1e-5, got[name]
        assert got[name]["losses"] < 1e-5, got[name]
    for name in ("sweep_settings", "sweep_settings_data"):
        res = got[name]
        assert res["diverged_same"] and res["diverged_at_same"] and res["best_same"], res
        assert res["params"] < 1e-5 and res["losses"] < 1e-5, res


def test_sigkill_of_every_process_then_resume_is_bit_identical(tmp_path):
    ckpt = tmp_path / "ckpt"
    out = tmp_path / "out"
    procs = _start(["checkpoint", str(out), str(ckpt)], _port())
    deadline = time.monotonic() + TIMEOUT
    try:
        while not (ckpt / CHECKPOINT_NAME).exists():  # the first checkpoint is complete
            assert time.monotonic() < deadline, "no checkpoint was written"
            assert all(p.poll() is None for p in procs), procs[0].communicate()[0][-3000:]
            time.sleep(0.01)
    finally:
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    assert not Path(f"{out}.0.npz").exists()  # killed before the end
    first = sorted(ckpt.glob("history-*.npz"))[0]
    written = first.stat().st_mtime_ns

    # the same two processes resume the killed run, then run it again uninterrupted
    _finish(_start(["checkpoint", str(out), str(ckpt), str(tmp_path / "whole")], _port()))
    assert first.stat().st_mtime_ns == written  # resumed from it, not started again
    resumed, whole = np.load(f"{out}.0.npz"), np.load(f"{out}.1.npz")
    assert set(resumed.files) == set(whole.files)
    for name in whole.files:
        np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)
    assert np.isfinite(whole["losses"]).all() and whole["losses"].shape == (120,)


@pytest.mark.parametrize("bad", [["-n", "0"], ["--timeout", "-1"], ["--devices", "0"]])
def test_launcher_refuses_bad_arguments_in_one_line(bad, capsys):
    from gdjax.cli import main

    assert main(["launch", *bad, str(WORKER), "compare", "x.json"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1


def test_initialize_is_a_no_op_alone_and_refuses_a_partial_setting(monkeypatch):
    import gdjax as gd

    for var in ("JAX_COORDINATOR_ADDRESS", "GDJAX_NUM_PROCESSES", "GDJAX_PROCESS_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE", raising=False)
    gd.distributed.initialize()  # one process: nothing to connect
    assert gd.distributed.is_main()
    with pytest.raises(gd.UsageError, match="all three"):
        gd.distributed.initialize(num_processes=2)
    with pytest.raises(gd.UsageError, match="process_id"):
        gd.distributed.initialize("127.0.0.1:1", num_processes=2, process_id=2)
    monkeypatch.setenv("GDJAX_NUM_PROCESSES", "two")
    with pytest.raises(gd.UsageError, match="GDJAX_NUM_PROCESSES"):
        gd.distributed.initialize()


def test_sweep_refuses_a_mesh_without_a_settings_axis():
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh

    import gdjax as gd

    mesh = Mesh(np.array(jax.devices()), ("data",))
    with pytest.raises(gd.UsageError, match='"settings"'):
        gd.sweep(
            lambda p, b: jnp.sum(p**2),
            jnp.ones(2),
            gd.optim.sgd(jnp.array([0.1, 0.2])),
            steps=3,
            mesh=mesh,
        )
