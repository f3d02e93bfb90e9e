"""The seed experiments in fast mode, each key number against an independent reference.

The references are computed here, not taken from the scripts: the course's published
numbers (G1), a hand computation (G2), SciPy's L-BFGS on our own NumPy objective in
float64 (G3), ``numpy.linalg.lstsq`` (R1, R2), the answer's 0.8 and ``jax.grad`` of a
loss written out in this file (C1, C2). Also the ``gdjax reproduce`` / ``gdjax train``
commands, run through :func:`gdjax.cli.main`.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax as gd
from gdjax.cli import main as cli

from _harness import list_experiments, load_experiment

SEEDS = ("seed000_logistic", "seed001_regression", "seed004_chain")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def _run(name: str, out) -> dict:
    metrics = load_experiment(name).main(["--fast", "--out", str(out)])
    on_disk = json.loads((out / name / "metrics.json").read_text())
    assert on_disk["experiment"] == name and on_disk["fast"] is True
    assert (out / name / "summary.md").stat().st_size > 0
    return metrics


def _png(path) -> bytes:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert len(data) > 5_000, f"{path} is nearly empty"
    return data


# --------------------------------------------------------------------------- seed 000


@pytest.fixture(scope="module")
def seed000(runs):
    return _run("seed000_logistic", runs)


def test_g1_table_matches_the_course():
    # Ng, "Derivatives with a Computation Graph": a = 5, b = 3, c = 2 gives u = 6, v = 11,
    # J = 33 and dJ/dv = 3, dJ/du = 3, dJ/da = 3, dJ/db = 6, dJ/dc = 9.
    published = {
        "u = b·c": 6,
        "v = a + u": 11,
        "J = 3v": 33,
        "dJ/dv": 3,
        "dJ/du": 3,
        "dJ/da": 3,
        "dJ/db": 6,
        "dJ/dc": 9,
    }
    rows, err = load_experiment("seed000_logistic").g1_table()
    table = {r[0]: r for r in rows}
    assert set(table) == set(published)
    for quantity, value in published.items():
        hand, auto = table[quantity][1], table[quantity][2]
        assert hand == pytest.approx(value, abs=1e-6), quantity
        if auto != "–":
            assert auto == pytest.approx(value, abs=1e-6), quantity
    assert err == pytest.approx(0.0, abs=1e-6)


def test_g2_one_step_matches_a_hand_computation():
    alpha = 0.1
    params, (x, y) = gd.models.get("G2").example()
    w1, w2, b = (float(params[k]) for k in ("w1", "w2", "b"))
    x1, x2, y = float(x[0]), float(x[1]), float(y)
    z = w1 * x1 + w2 * x2 + b
    a = 1.0 / (1.0 + np.exp(-z))
    loss = -(y * np.log(a) + (1 - y) * np.log(1 - a))
    dz = a - y
    hand = {
        "z = w1·x1 + w2·x2 + b": z,
        "a = σ(z)": a,
        "L = −(y log a + (1−y) log(1−a))": loss,
        "dz = a − y": dz,
        "dw1": x1 * dz,
        "dw2": x2 * dz,
        "db": dz,
        "w1 ← w1 − α·dw1": w1 - alpha * x1 * dz,
        "w2 ← w2 − α·dw2": w2 - alpha * x2 * dz,
        "b ← b − α·db": b - alpha * dz,
    }
    rows, errs = load_experiment("seed000_logistic").g2_step(alpha)
    table = {r[0]: r for r in rows}
    assert set(table) == set(hand)
    for quantity, value in hand.items():
        for got in table[quantity][1:]:
            if got != "–":
                assert got == pytest.approx(value, abs=1e-6), quantity
    assert max(errs.values()) <= 1e-6


def _g3_reference(features) -> float:
    """J(θ*) by SciPy's L-BFGS on the same standardised columns, float64, written here."""
    from scipy.optimize import minimize
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer()
    cols = [list(raw.feature_names).index(f) for f in features]
    X = raw.data[:, cols]
    X = (X - X.mean(0)) / X.std(0)
    y = raw.target.astype(np.float64)

    def objective(theta):
        z = X @ theta[:-1] + theta[-1]
        p = 1.0 / (1.0 + np.exp(-z))
        loss = np.mean(np.logaddexp(0.0, z) - y * z)  # −y log p − (1−y) log(1−p)
        r = (p - y) / len(y)
        return loss, np.append(X.T @ r, r.sum())

    res = minimize(objective, np.zeros(X.shape[1] + 1), jac=True, method="BFGS", tol=1e-12)
    assert np.linalg.norm(res.jac) < 1e-8
    return float(res.fun)


def test_g3_final_loss_reaches_an_independent_optimum(seed000):
    g3 = seed000["g3"]
    reference = _g3_reference(g3["features"])
    assert g3["final_loss"] == pytest.approx(reference, abs=1e-4)
    assert g3["reference_loss"] == pytest.approx(reference, abs=1e-8)
    assert g3["sklearn_loss"] == pytest.approx(reference, abs=1e-6)
    assert g3["losses"][0] > reference + 0.1  # it did have to descend
    assert g3["accuracy"] > 0.9
    assert seed000["ok"] and all(c["ok"] for c in seed000["checks"])


def test_g3_picture(seed000, runs):
    _png(runs / "seed000_logistic" / "g3_loss.png")


def test_seed000_sklearn_reference_does_not_warn(recwarn):
    ds = gd.data.breast_cancer(["mean radius", "mean texture"])
    X, y = np.asarray(ds.X, np.float64), np.asarray(ds.y, np.float64)
    load_experiment("seed000_logistic").reference_optimum(X, y)
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning | DeprecationWarning)]


# --------------------------------------------------------------------------- seed 001


@pytest.fixture(scope="module")
def seed001(runs):
    return _run("seed001_regression", runs)


def _lstsq(X, y):
    Xb = np.column_stack([X, np.ones(len(y))])
    theta = np.linalg.lstsq(Xb, y, rcond=None)[0]
    return theta, float(np.mean((Xb @ theta - y) ** 2))


def test_r1_r2_reach_least_squares(seed001):
    # R1's data as the script draws it (seed 0, m = 100); R2's is the diabetes data
    k_data = jax.random.split(jax.random.key(0), 3)[0]
    ds1 = gd.data.linear_regression(k_data, 100, 1, w=[2.0], b=-1.0, noise=0.5, x_mean=1.5)
    ds2 = gd.data.diabetes()
    for model, ds in (("R1", ds1), ("R2", ds2)):
        theta, loss = _lstsq(np.asarray(ds.X, np.float64), np.asarray(ds.y, np.float64))
        got = np.asarray(seed001["gd_theta"][model])
        assert np.linalg.norm(got - theta) <= 1e-5 * np.linalg.norm(theta), model
        assert seed001["final_loss"][model] == pytest.approx(loss, rel=1e-5), model


def test_r3_r4_losses_decrease(seed001):
    loss, lstsq = seed001["final_loss"], seed001["lstsq_loss"]["R2"]
    for model in ("R3", "R4"):
        assert loss[model] < 0.75 * seed001["initial_loss"][model], model
    assert loss["R3"] == pytest.approx(lstsq, rel=1e-3)  # still linear in x
    assert loss["R4"] < lstsq  # the sigmoid layer beats every linear fit


def test_r1_landscape_has_five_paths_from_one_start(seed001, runs):
    start = load_experiment("seed001_regression").START
    paths = seed001["landscape_paths"]
    assert len(paths) == 5
    for label, path in paths.items():
        path = np.asarray(path)
        assert path.shape == (31, 2), label  # 30 steps (fast): 31 points
        np.testing.assert_allclose(path[0], [start["w"], start["b"]], err_msg=label)
        assert np.any(path[1] != path[0]), f"{label}: the start is drawn twice"
    _png(runs / "seed001_regression" / "r1_landscape.png")
    _png(runs / "seed001_regression" / "diabetes_loss.png")
    assert seed001["ok"]


# --------------------------------------------------------------------------- seed 004


@pytest.fixture(scope="module")
def seed004(runs):
    # through `gdjax train`, so this also tests the command
    assert cli(["train", "seed004_chain", "--fast", "--out", str(runs)]) == 0
    return json.loads((runs / "seed004_chain" / "metrics.json").read_text())


def _c1_loss(params, batch):
    """C1 with f = tanh(a·x), g = f² + b·f, h = c·g, written out here: Σ (h − y)²."""
    x, y = batch
    f = jnp.tanh(params["a"] * x)
    h = params["c"] * (f**2 + params["b"] * f)
    return jnp.sum((h - y) ** 2)


def test_c1_gradients_match_jax_grad(x64):
    c1 = gd.models.get("C1")
    k_p, k_x, k_y = jax.random.split(jax.random.key(3), 3)
    params = dict(zip("abc", jax.random.normal(k_p, (3, 8), jnp.float64)))  # 8 points
    x = jax.random.uniform(k_x, (8, 16), jnp.float64, -2.0, 2.0)
    batch = (x, jax.random.normal(k_y, (8, 16), jnp.float64))

    @jax.jit
    def both(params, batch):
        bp = jax.vmap(c1.backprop)(params, batch)
        return bp.loss, bp.grads, jax.vmap(jax.value_and_grad(_c1_loss))(params, batch)

    loss, grads, (want_loss, want) = both(params, batch)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    for k in "abc":
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-10, atol=1e-12, err_msg=k)
    assert float(jnp.min(jnp.abs(want["c"]))) > 1e-3  # the comparison is not of zeros


def test_c1_fit_recovers_the_truth(seed004):
    module = load_experiment("seed004_chain")
    found, truth = seed004["c1"]["found"], module.TRUTH
    sign = np.sign(found["a"] * truth["a"])  # f is odd: (a, b) and (−a, −b) give one ŷ
    for k, s in (("a", sign), ("b", sign), ("c", 1.0)):
        assert s * found[k] == pytest.approx(truth[k], abs=1e-2), k
    # the fit stopped where the gradient of our own loss vanishes
    k_data = jax.random.split(jax.random.key(0), 3)[0]
    batch = module.chain_data(k_data, 64)
    params = {k: jnp.float32(v) for k, v in found.items()}
    grads = jax.grad(_c1_loss)(params, batch)
    assert max(abs(float(g)) for g in grads.values()) < 1e-2
    assert seed004["c1"]["wrong_check_failures"] == ["dLoss/dc"]


def test_c2_fan_out_sums_to_the_answers_0_8(seed004):
    c2 = seed004["c2"]
    np.testing.assert_allclose(c2["arriving"], [-0.2, 0.4, 0.6], atol=1e-6)
    assert c2["sum"] == pytest.approx(0.8, abs=1e-6)
    params, _ = gd.models.get("C2").example()
    want = jax.grad(lambda p: jnp.sum(p["v"] * (p["a"] * p["b"])))(params)
    assert c2["grads"]["a"] == pytest.approx(float(params["b"]) * 0.8, abs=1e-6)
    assert c2["grads"]["b"] == pytest.approx(float(params["a"]) * 0.8, abs=1e-6)
    for k in ("a", "b"):
        assert c2["grads"][k] == pytest.approx(float(want[k]), abs=1e-6)
    assert seed004["ok"]


def test_seed004_pictures(seed004, runs):
    for stem in ("c1_loss", "c1_graph", "c2_graph"):
        _png(runs / "seed004_chain" / f"{stem}.png")


# --------------------------------------------------------------------------- commands


def test_reproduce_one_experiment(tmp_path, capsys):
    assert cli(["reproduce", "--fast", "--only", "seed004_chain", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "seed004_chain" in printed and "PASS" in printed
    assert "experiments: 1/1 pass" in printed
    metrics = json.loads((tmp_path / "seed004_chain" / "metrics.json").read_text())
    assert metrics["ok"] and metrics["fast"]
    assert (tmp_path / "seed004_chain" / "summary.md").read_text().startswith("# seed004_chain")
    assert (tmp_path / "seed004_chain" / "log.txt").exists()


def test_train_lists_the_experiments(capsys):
    assert cli(["train"]) == 0
    printed = capsys.readouterr().out
    names = list_experiments()
    assert set(SEEDS) <= set(names)
    is_seed = [n.startswith("seed") for n in names]
    assert is_seed == sorted(is_seed, reverse=True)  # the seed documents come first
    for name in names:
        assert name in printed


@pytest.mark.parametrize("command", ["train", "reproduce"])
def test_unknown_experiment_is_a_clear_error(command, tmp_path, capsys):
    argv = ["train", "no_such_experiment"] if command == "train" else ["reproduce", "--only"]
    if command == "reproduce":
        argv += ["no_such_experiment", "--out", str(tmp_path)]
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert "no_such_experiment" in err and "seed004_chain" in err  # names the known ones


@pytest.mark.parametrize("only", [",", "", " , "])
def test_reproduce_only_naming_nothing_is_a_usage_error(only, tmp_path, capsys):
    assert cli(["reproduce", "--only", only, "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "--only names no experiment; known:" in err and "seed004_chain" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_reproduce_out_is_checked_before_any_work(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for out in (a_file, a_file / "runs"):
        assert cli(["reproduce", "--fast", "--only", "seed004_chain", "--out", str(out)]) == 2
        captured = capsys.readouterr()
        assert "--out" in captured.err and "Traceback" not in captured.err
        assert "verify" not in captured.out  # refused before the models were checked


# --------------------------------------------------------------------------- helpers


def test_checks_and_markdown_tables(tmp_path):
    from _harness import Run, at_most, close, experiment_parser, holds, markdown_table

    assert close("x", 1.00005, 1.0, atol=1e-4).ok
    assert not close("x", 1.001, 1.0, rtol=1e-4).ok
    assert not close("x", float("nan"), 1.0, atol=1.0).ok  # NaN never passes
    assert at_most("x", 1.0, 1.0).ok and not at_most("x", 1.5, 1.0).ok
    assert holds("x", True, 3, "a property").ok

    table = markdown_table(["a", "b"], [["|Δ| ≤ 1", 0.123456789]])
    assert table.splitlines()[2] == "| \\|Δ\\| ≤ 1 | 0.123457 |"

    args = experiment_parser("demo", "Demo.").parse_args(["--out", str(tmp_path)])
    run = Run(args, "demo", "Demo.")
    metrics = run.finish(checks=[close("max |Δ|", 0.5, 0.0, atol=1.0)], metrics={"v": [1.0]})
    assert metrics["ok"] and metrics["v"] == [1.0] and not metrics["fast"]
    row = next(r for r in (tmp_path / "demo" / "summary.md").read_text().splitlines() if "max" in r)
    assert row.replace("\\|", "").count("|") == 6  # five cells, whatever the text holds
