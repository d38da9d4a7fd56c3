"""Shared test helpers: run the CLI in a subprocess (exit code + stderr as a user sees them)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: int = 600, env: dict | None = None, module: str = "omnideft"):
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=REPO)


def run_cli_here(*args: str, cwd: Path | None = REPO) -> subprocess.CompletedProcess:
    """`omnideft ARGS` in this process (in `cwd`, None: where it is), as run_cli returns it: for commands whose process
    start (about 3 s of imports) would dominate the test. An unexpected exception propagates and fails the test."""
    import contextlib
    import io

    from omnideft.cli import main

    out, err, before = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        os.chdir(cwd or before)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(["omnideft", *args], code, out.getvalue(), err.getvalue())


def assert_one_line_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (for rendezvous in multi-process tests; CI machines run other jobs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_stock_peft_loaded(model, folder) -> None:
    """Stock PEFT really loaded the adapter file: the model's adapter state holds exactly the file's tensors, by
    name and by value (PEFT only warns about keys it cannot place and then keeps the initial values)."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    saved = load_file(Path(folder) / "adapter_model.safetensors")
    loaded = get_peft_model_state_dict(model)
    assert saved and sorted(loaded) == sorted(saved), (sorted(set(saved) ^ set(loaded)))[:3]
    for name, tensor in saved.items():
        assert torch.equal(loaded[name].detach().cpu(), tensor), name
