"""Every bad input a clear error (issue 12): one table per surface.

* API: each case must raise :class:`gd.UsageError` (a ValueError and a TypeError) whose
  message names the argument, before any XLA trace.
* CLI: each case runs ``gdjax ...`` through :func:`gdjax.cli.main` in this process (cheap)
  and must exit 2 with one line on stderr and no traceback; a few run the real command in
  a subprocess.
* Outputs: a run's files appear together or not at all, a second writer of the same
  ``--out`` is refused, and a bad ``--out`` or a missing matplotlib is refused before work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import gdjax as gd
from gdjax import UsageError
from gdjax.cli import main as cli

O = gd.optim
X, Y = jnp.ones((8, 2)), jnp.ones(8)
P = {"w": jnp.zeros(2), "b": jnp.zeros(())}


def _loss(p, batch):
    x, y = batch
    return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)


def _fit(loss=_loss, params=P, data=(X, Y), steps=3, opt=None):
    return gd.fit(loss, params, opt or O.sgd(0.1), data, steps=steps)


# ---------------------------------------------------------------------------------------
# API: (what, call, the words the message must hold)

API = [
    # update rules and their hyperparameters
    ("lr zero", lambda: O.adam(0.0), "`learning_rate` must be a positive"),
    ("lr string", lambda: O.sgd("0.1"), "`learning_rate` must be a number"),
    ("adagrad eps 0", lambda: O.adagrad(0.1, eps=0.0), "`eps` must be a positive"),
    ("beta 1", lambda: O.adam(0.1, b2=1.0), "`b2` must lie in [0.0, 1.0)"),
    ("mu_dtype bogus", lambda: O.adam(0.1, mu_dtype="bogus"), "`mu_dtype` must be a dtype"),
    ("mu_dtype int", lambda: O.nadam(0.1, mu_dtype=jnp.int8), "`mu_dtype` must be a floating"),
    ("mask leaf", lambda: O.adamw(0.1, mask={"w": "yes"}), "`mask`['w'] is 'yes'"),
    ("mask shape", lambda: O.adamw(0.1, mask={"v": True}).init(P), "`mask` is not shaped"),
    ("mask fn", lambda: O.adamw(0.1, mask=lambda p: 3).init(P), "`mask` is 3, not True"),
    ("init strings", lambda: O.adam(0.1).init({"w": "abc"}), "`params['w']` is 'abc'"),
    ("init integers", lambda: O.sgd(0.1).init({"w": jnp.ones(2, jnp.int32)}),
     "`params['w']` has dtype int32"),
    ("another rule's state", lambda: O.adam(0.1).update(P, O.sgd(0.1).init(P)),
     "`state` has 1 parts"),
    ("schedule fn raises", lambda: O.sgd(lambda t: 1 / 0), "raised ZeroDivisionError at step 0"),
    ("schedule count str", lambda: O.constant(0.1)("a"), "`count` must be a step number"),
    # schedules: concrete values checked where the schedule becomes a rate
    ("lambda lr < 0", lambda: O.sgd(lambda t: -0.1), "`learning_rate(0)` must be a non-neg"),
    ("warmup-cosine end < 0 as lr",
     lambda: O.adam(O.warmup_cosine_decay_schedule(0.0, 0.1, 10, 100, end_value=-0.01)),
     "`learning_rate` is the schedule"),
    ("negative piecewise as lr", lambda: O.sgd(O.piecewise_constant(0.1, {5: -1.0})),
     "value at step 5 is -0.1"),
    ("zero schedule as lr", lambda: O.sgd(O.constant(0.0)), "0 at every step checked"),
    ("negative decay schedule", lambda: O.adamw(0.1, weight_decay=O.constant(-1e-3)),
     "a weight decay must be a non-negative"),
    ("decay_rate 0", lambda: O.exponential_decay(0.1, 10, 0.0), "`decay_rate` is 0"),
    ("transition_steps 0", lambda: O.polynomial_schedule(1.0, 0.0, 1.0, 0), "`transition_steps`"),
    ("transition_begin < 0", lambda: O.linear_schedule(1.0, 0.0, 5, -1), "`transition_begin`"),
    ("decay_steps float", lambda: O.cosine_decay(0.1, 10.5), "`decay_steps` must be a whole"),
    ("schedule NaN", lambda: O.constant(float("nan")), "`value`"),
    ("join lengths", lambda: O.join_schedules([O.constant(1.0)], [3]), "`boundaries` has 1"),
    ("join not schedules", lambda: O.join_schedules([0.1, 0.2], [3]), "`schedules[0]` must be"),
    # fit and sweep
    ("steps > int32", lambda: _fit(steps=2**40), "`steps` must be below 2**31 - 1"),
    ("steps float", lambda: _fit(steps=10.0), "`steps` must be"),
    ("vector loss", lambda: _fit(loss=lambda p, b: b[0] @ p["w"]), "`loss_fn` must return a"),
    ("integer params", lambda: _fit(params={"w": jnp.zeros(2, jnp.int32), "b": jnp.zeros(())}),
     "`params['w']` has dtype int32"),
    ("params strings", lambda: _fit(params={"w": "ab", "b": "c"}), "`params['b']` is 'c'"),
    ("params str array", lambda: _fit(params={"w": np.array(["a", "b"]), "b": 0.0}),
     "`params['w']` is an array of dtype <U1"),
    ("data nested lists", lambda: _fit(data=([[1.0, 2.0]] * 8, [1.0] * 8)),
     "`data` holds a Python list of numbers"),
    ("loss needs a key", lambda: _fit(loss=lambda p, b: jnp.sum(p["v"])),
     "`loss_fn` looks up the key 'v'"),
    ("features mismatch", lambda: _fit(params={"w": jnp.zeros(3), "b": jnp.zeros(())}),
     "`loss_fn` cannot run on these inputs"),
    ("sweep vector loss", lambda: gd.sweep(lambda p, b: b[0] @ p["w"], P,
                                          O.sgd(jnp.asarray([0.1, 0.2])), (X, Y), steps=2),
     "`loss_fn` must return a"),
    # a model's own loss
    ("model features", lambda: gd.models.get("G3").loss(
        {"w": jnp.zeros(3), "b": jnp.zeros(())}, (X, Y)), "params['w'] says n = 3"),
    ("model missing key", lambda: gd.models.get("R2").loss({"w": jnp.zeros(2)}, (X, Y)),
     "Missing: ['b']"),
    ("model batch", lambda: gd.models.get("G3").loss(P, X), "`batch` must be a pair"),
    # a check of a custom (loss, backprop) pair
    ("check pair needs a key", lambda: gd.check_backprop(
        (lambda p, b: jnp.sum(p["v"] ** 2), lambda p, b: (0.0, {"w": p["w"]})),
        {"w": jnp.ones(2)}), "`loss_fn` looks up the key 'v'"),
    # plots
    ("plot to a folder", lambda: gd.plot.loss_curves({"a": [1.0, 0.5]}, ".", title="t"),
     "`path` '.' is a folder"),
]  # fmt: skip


@pytest.mark.parametrize("call,words", [c[1:] for c in API], ids=[c[0] for c in API])
def test_api_bad_input_is_a_named_usage_error(call, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as info:
        call()
    assert words in str(info.value), str(info.value)


def test_no_matplotlib_is_one_clear_import_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ModuleNotFoundError, match="pip install 'gdjax\\[plot\\]'") as info:
        gd.plot.loss_curves({"a": [1.0, 0.5]}, tmp_path / "x.png", title="t")
    assert info.value.name == "matplotlib"  # so the CLI names the package


def test_steps_check_is_shared_by_fit_and_sweep():
    from gdjax.train.args import STEPS_LIMIT, check_steps

    assert check_steps(STEPS_LIMIT - 1) == STEPS_LIMIT - 1
    for bad in (STEPS_LIMIT, 0, True, 3.0):
        with pytest.raises(UsageError, match="`steps`"):
            check_steps(bad)


# ---------------------------------------------------------------------------------------
# CLI, in this process: (argv, the words stderr must hold). ``{d}``: a fresh folder,
# ``{f}``: a regular file in it.

CLI = [
    (["verify", "--seed", "-1"], "`key` as an int seed must lie in [0, 2**32)"),
    (["verify", "--points", "many"], "invalid int value"),
    (["reproduce", "--only", ","], "--only names no experiment"),
    (["reproduce", "--only", ""], "--only names no experiment"),
    (["reproduce", "--only", "seed004_chain", "--out", "{f}"], "is a file, not a folder"),
    (["reproduce", "--only", "nope"], "unknown experiment"),
    (["bench", "--json", "{d}/missing/b.json", "--quick"], "does not exist"),
    (["bench", "--json", "{d}", "--quick"], "is a folder"),
    (["train", "seed004_chain", "--fast", "--out", "{f}"], "is a file, not a folder"),
    (["train", "seed004_chain", "--fast", "--out", "{f}/sub"], "is a file, not a folder"),
    (["train", "seed004_chain", "--seed", "-1"], "--seed: -1 is not in [0, 2**32)"),
    (["train", "no_such_experiment"], "unknown experiment"),
]


def _argv(argv, tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    return [a.format(d=tmp_path, f=f) for a in argv]


def _one_line_exit_2(argv, capsys):
    assert cli(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "verify:" not in captured.out  # refused before any work (reproduce's first step)
    return err


@pytest.mark.parametrize("argv,words", CLI, ids=[" ".join(c[0][:3]) for c in CLI])
def test_cli_bad_input_exits_2_in_one_line(argv, words, tmp_path, capsys):
    err = _one_line_exit_2(_argv(argv, tmp_path), capsys)
    assert words in err, err


def test_cli_out_holding_a_file_of_the_experiments_name(tmp_path, capsys):
    (tmp_path / "seed004_chain").write_text("not a folder")
    for command in ("reproduce", "train"):
        argv = [command, "--only", "seed004_chain"] if command == "reproduce" else [
            command, "seed004_chain"]  # fmt: skip
        err = _one_line_exit_2([*argv, "--fast", "--out", str(tmp_path)], capsys)
        assert "seed004_chain is a file, not a folder" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_cli_unwritable_out_is_refused_before_work(tmp_path, capsys):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    err = _one_line_exit_2(["train", "seed004_chain", "--out", str(locked / "runs")], capsys)
    assert "permission denied" in err and not any(locked.iterdir())


def test_cli_without_matplotlib_refuses_before_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    err = _one_line_exit_2(["train", "seed004_chain", "--out", str(tmp_path)], capsys)
    assert "'matplotlib'" in err and not (tmp_path / "seed004_chain").exists()


SUBPROCESS = [  # the real command: its own interpreter, its own exit status
    (["verify", "--seed", "-1"], "seed must lie in [0, 2**32)"),
    (["bench", "--json", "/nonexistent-gdjax-dir/b.json"], "does not exist"),
]


@pytest.mark.parametrize("argv,words", SUBPROCESS, ids=[c[0][0] for c in SUBPROCESS])
def test_real_command_exits_2_without_traceback(argv, words):
    done = subprocess.run(
        [sys.executable, "-m", "gdjax.cli", *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stdout + done.stderr and words in done.stderr
    assert "benchmark" not in done.stderr.lower().replace("gdjax bench", "")  # nothing ran


# ---------------------------------------------------------------------------------------
# A run's outputs: together or not at all; one writer at a time.


def _run(out, name="demo"):
    from _harness import Run, experiment_parser

    return Run(experiment_parser(name, "Demo.").parse_args(["--out", str(out)]), name, "Demo.")


def test_outputs_appear_together_or_not_at_all(tmp_path):
    from _harness import close

    first = _run(tmp_path)
    first.png("loss", "a picture").write_bytes(b"old")
    first.finish(checks=[close("x", 1.0, 1.0)], metrics={"v": 1})
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [
        "loss.png", "metrics.json", "summary.md"
    ]  # fmt: skip

    second = _run(tmp_path)  # writes into a staging folder, the old one stays whole
    second.png("loss", "a picture").write_bytes(b"new")
    assert (tmp_path / "demo" / "loss.png").read_bytes() == b"old"
    assert second.dir != tmp_path / "demo" and second.dir.name.startswith(".demo.partial-")
    del second  # the run raised, say: nothing of it is published, its staging goes
    assert (tmp_path / "demo" / "loss.png").read_bytes() == b"old"
    assert not list(tmp_path.glob(".demo.partial-*"))

    third = _run(tmp_path)
    third.png("loss", "a picture").write_bytes(b"new")
    third.finish(checks=[close("x", 1.0, 1.0)], metrics={"v": 3})
    assert (tmp_path / "demo" / "loss.png").read_bytes() == b"new"
    assert third.dir == tmp_path / "demo" and 'v": 3' in (third.dir / "metrics.json").read_text()


def test_a_second_writer_is_refused(tmp_path, capsys):
    lock = tmp_path / ".seed004_chain.lock"
    holder = subprocess.Popen(  # another process holds the folder's lock (no JAX in it)
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        err = _one_line_exit_2(["train", "seed004_chain", "--out", str(tmp_path)], capsys)
        assert "another run is writing seed004_chain/" in err
        with pytest.raises(UsageError, match="another run is writing"):
            _run(tmp_path, "seed004_chain")
        assert not (tmp_path / "seed004_chain").exists()
    finally:
        holder.kill()
        holder.wait()
    _run(tmp_path, "seed004_chain")  # free again once it ends


def test_reproduce_writes_a_failed_log_beside_the_last_good_run(tmp_path, monkeypatch):
    from gdjax.cli.reproduce import _run_one

    import _harness

    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "metrics.json").write_text("{}")

    class Broken:
        @staticmethod
        def main(argv):
            print("started")
            raise RuntimeError("boom")

    monkeypatch.setattr(_harness, "load_experiment", lambda name: Broken)
    metrics, error = _run_one(_harness, "demo", Path(tmp_path), fast=True)
    assert metrics is None and "boom" in error
    assert (tmp_path / "demo.failed.log").read_text().startswith("started")
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["metrics.json"]


def test_a_second_thread_writing_the_same_folder_is_refused(tmp_path):
    import threading

    from _harness import close

    first = _run(tmp_path)
    refused = []

    def second():
        try:
            _run(tmp_path)
        except UsageError as err:
            refused.append(str(err))

    worker = threading.Thread(target=second)
    worker.start()
    worker.join()
    assert refused and "another run is writing demo/" in refused[0]
    first.finish(checks=[close("x", 1.0, 1.0)], metrics={})
    worker = threading.Thread(target=second)  # free once the first has published
    worker.start()
    worker.join()
    assert len(refused) == 1
