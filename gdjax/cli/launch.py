"""``gdjax launch -n N SCRIPT [ARGS]``: N processes of one script on this machine.

For trying a multi-process run before a cluster: each process gets
``JAX_COORDINATOR_ADDRESS=127.0.0.1:<free port>``, ``GDJAX_NUM_PROCESSES``,
``GDJAX_PROCESS_ID`` and (``--devices``) ``XLA_FLAGS=--xla_force_host_platform_device_count``,
so a script that calls ``gd.distributed.initialize()`` first joins the others. Their output
is gathered line by line, prefixed with the rank; if one process fails the others are
stopped. On a cluster, the cluster's own launcher starts the processes instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HELP = "run N processes of a script on this machine, connected by jax.distributed"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--processes", type=int, default=2, help="how many (default 2)")
    p.add_argument(
        "--devices", type=int, default=None, help="simulated CPU devices per process"
    )
    p.add_argument(
        "--timeout", type=float, default=None, help="stop every process after this many seconds"
    )
    p.add_argument("script", help="a Python script that calls gd.distributed.initialize()")
    p.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(rank: int, processes: int, port: int, devices: int | None = None) -> dict:
    """The environment of process ``rank`` of ``processes`` on 127.0.0.1 (``devices``:
    simulated CPU devices per process)."""
    env = dict(os.environ)
    env.update(
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
        GDJAX_NUM_PROCESSES=str(processes),
        GDJAX_PROCESS_ID=str(rank),
    )
    if devices is not None:
        flag = f"--xla_force_host_platform_device_count={devices}"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
    return env


def run(args: argparse.Namespace) -> int:
    """The worst exit status of the processes (124 when ``--timeout`` stopped them)."""
    from gdjax._validate import UsageError

    if not 1 <= args.processes <= 64:
        raise UsageError(f"--processes must be in 1 … 64, got {args.processes}.")
    if args.devices is not None and not 1 <= args.devices <= 256:
        raise UsageError(f"--devices must be in 1 … 256, got {args.devices}.")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {args.timeout}.")
    if not Path(args.script).is_file():
        raise UsageError(f"script {args.script!r} does not exist; pass the path of a .py file.")
    port = free_port()
    procs = []
    for rank in range(args.processes):
        procs.append(
            subprocess.Popen(
                [sys.executable, args.script, *args.args],
                env=environment(rank, args.processes, port, args.devices),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        )
    pumps = [threading.Thread(target=_pump, args=(p, r), daemon=True) for r, p in enumerate(procs)]
    for t in pumps:
        t.start()
    status = _wait(procs, args.timeout)
    for t in pumps:
        t.join(timeout=5)
    return status


def _pump(proc: subprocess.Popen, rank: int) -> None:
    for line in proc.stdout:
        sys.stdout.write(f"[{rank}] {line}")
        sys.stdout.flush()


def _wait(procs: list[subprocess.Popen], timeout: float | None) -> int:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        codes = [p.poll() for p in procs]
        failed = [c for c in codes if c not in (None, 0)]
        if failed or all(c is not None for c in codes):
            if failed:
                _stop(procs)
                print(f"gdjax launch: a process exited with status {failed[0]}; stopped the rest")
            return max(abs(c or 0) for c in (p.wait() for p in procs))
        if deadline is not None and time.monotonic() > deadline:
            _stop(procs)
            print(f"gdjax launch: stopped every process after {timeout:g} s (--timeout)")
            return 124
        time.sleep(0.05)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
