"""Section ``scaling``: one sweep over 1 process against the same sweep over 2 processes.

The sweep (:mod:`._scaling_worker`: N1, K learning rates on a ``"settings"`` mesh) runs
in fresh processes started the way ``gdjax launch`` starts them (127.0.0.1, gloo), each
with one CPU device: once as one process, once as two. Both are cold (a new process
compiles) and warm (the second call, new rates). The ratio is the speed-up of two
processes; on a machine with two cores it is bounded by 2, less the cost of the
processes' rendezvous and of gathering the runs' results between chunks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ._timing import Row, speedup_row

NAME = "scaling"

#: Sizes for ``--quick``: a smoke test, not a measurement.
QUICK: dict[str, Any] = {"k": 64, "steps": 20}

_WORKER = Path(__file__).resolve().parent / "_scaling_worker.py"


def launch(processes: int, k: int, steps: int, timeout: float = 600.0) -> dict[str, Any]:
    """Run the worker in ``processes`` processes of one CPU device each; its timings."""
    from gdjax.cli.launch import environment, free_port

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "times.json"
        port = free_port()
        procs = []
        for rank in range(processes):
            env = {**environment(rank, processes, port, devices=1), "JAX_PLATFORMS": "cpu"}
            cmd = [sys.executable, str(_WORKER), str(k), str(steps), str(out)]
            procs.append(
                subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            )
        try:
            logs = [p.communicate(timeout=timeout)[0] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        for p, log in zip(procs, logs):
            if p.returncode:
                raise RuntimeError(f"scaling worker failed:\n{log.decode()[-2000:]}")
        return json.loads(out.read_text())


def bench(*, k: int = 4096, steps: int = 200) -> tuple[list[Row], dict[str, Any]]:
    one, two = launch(1, k, steps), launch(2, k, steps)
    rows = [
        speedup_row(
            NAME,
            f"N1 sweep {k} lrs x {steps} steps, {kind}: 2 processes vs 1",
            "2 processes x 1 CPU device",
            "1 process x 1 CPU device",
            two[f"{kind}_s"],
            one[f"{kind}_s"],
            unit="run",
            note="the speed-up of the second process (at most 2 on 2 cores)",
        )
        for kind in ("cold", "warm")
    ]
    return rows, {"scaling": {"1 process": one, "2 processes": two, "k": k, "steps": steps}}
