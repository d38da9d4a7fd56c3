"""Runs that `omnideft train` starts itself (recipe `launch.config`): three layers of processes, and what a signal
does to them (docs/launch.md, "Signals").

- the supervisor, `omnideft train`, starts the launcher in a session of its own and waits for it. SIGTERM, SIGINT,
  SIGUSR1 and SIGHUP it receives are forwarded to the launcher's process group, so the run stops as a whole and
  nothing outlives the supervisor (before, a SIGTERM killed the supervisor alone and the ranks ran on as orphans).
- the launcher, `python -m omnideft.train.launch` = `accelerate launch` in this process: its torch elastic agent
  starts every rank in a session of its own, forwards those signals to each rank (SIGUSR1 added to its list) and
  waits for them.
- the ranks: SIGTERM / SIGUSR1 make them checkpoint after the current step and exit 75 (train/signals.py). Each
  writes a stop report instead of printing; the launcher turns the reports into one line and exit 75, where the agent
  alone reports "omnideft FAILED" with a traceback and exits 1.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from omnideft.files import write_text_atomic
from omnideft.train.signals import EXIT_STOPPED, OTHER_RANK, TrainingStopped

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP)
STOP_REPORTS_ENV = "OMNIDEFT_STOP_REPORTS"  # the folder where ranks started by the launcher report a stop
# torch elastic's defaults, plus SIGUSR1 (SLURM's `--signal=USR1@120` preemption warning): a signal it does not
# handle would kill the launcher and orphan the ranks.
AGENT_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
# Seconds the agent waits for the ranks to finish their step and checkpoint before SIGKILL (torch's default is 30).
AGENT_SHUTDOWN_TIMEOUT = "300"


def relaunch(config: str, argv: list[str]) -> int:
    """The supervisor: run `omnideft ARGV` under `accelerate launch --config_file CONFIG`; its exit code is the
    launcher's (75 when the ranks checkpointed and stopped on a signal)."""
    cmd = [sys.executable, "-m", "omnideft.train.launch", "--config_file", config, "-m", "omnideft", *argv]
    print(f"launching: accelerate launch --config_file {config} -m omnideft {' '.join(argv)}", file=sys.stderr)
    launcher: subprocess.Popen | None = None
    received: list[int] = []

    def forward(signum, frame):
        # Each signal once: a repeat reaching the agent while it waits for the ranks would end it there and then,
        # leaving the ranks (which already have the signal) without their launcher.
        if signum in received:
            return
        received.append(signum)
        if launcher is not None:
            _signal_group(launcher.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        # its own session: a terminal's Ctrl-C reaches the supervisor only, which forwards it once, like any signal
        launcher = subprocess.Popen(cmd, env={**os.environ, "OMNIDEFT_LAUNCHED": "1"}, start_new_session=True)
        for signum in received:  # received before the launcher existed
            _signal_group(launcher.pid, signum)
        code = launcher.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code if code >= 0 else 128 - code  # killed by signal N: the shell's 128 + N


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:  # the launcher already ended
        pass


def report_stop(stop: TrainingStopped) -> bool:
    """A rank under the launcher: write the stop report (the launcher prints one line for all ranks); False when
    not under it (the rank prints its own line)."""
    folder = os.environ.get(STOP_REPORTS_ENV)
    if not folder or not os.path.isdir(folder):
        return False
    record = {"signal": stop.signame, "step": stop.step, "checkpoint": str(stop.checkpoint)}
    write_text_atomic(Path(folder) / f"rank-{int(os.environ.get('RANK', '0')):05d}.json", json.dumps(record))
    return True


def stopped_line(folder: Path) -> str | None:
    """The one line of a stop the ranks reported in FOLDER (None: no rank stopped on a signal), naming the signal a
    rank received rather than "another rank"."""
    reports = [json.loads(p.read_text()) for p in sorted(Path(folder).glob("rank-*.json"))]
    if not reports:
        return None
    first = min(reports, key=lambda r: r["signal"] == OTHER_RANK)
    return f"omnideft: {TrainingStopped(first['signal'], first['step'], first['checkpoint'])}"


class _QuietStops(logging.Filter):
    """Drops the agent's warnings about passing a signal on ("Received 15 death signal", "Sending process N closing
    signal SIGTERM": what it is asked to do) and, once a rank reported a stop, its "failed (exitcode: 75)" errors: a
    rank that checkpointed and stopped did not fail."""

    def __init__(self, reports: Path):
        super().__init__()
        self.reports = reports

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith(("Received %s death signal", "Sending process")):
            return False
        return not (message.startswith("failed (exitcode") and any(self.reports.glob("rank-*.json")))


def launcher_main(argv: list[str]) -> int:
    """The launcher: `accelerate launch ARGV` in this process, with the stop reports mapped to one line and 75."""
    os.environ.setdefault("PET_SIGNALS_TO_HANDLE", AGENT_SIGNALS)  # torchrun's --signals-to-handle
    os.environ.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", AGENT_SHUTDOWN_TIMEOUT)
    reports = Path(tempfile.mkdtemp(prefix="omnideft-stop-"))
    os.environ[STOP_REPORTS_ENV] = str(reports)  # the ranks inherit the launcher's environment
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.api import SignalException

    for name in ("torch.distributed.elastic.agent.server.api", "torch.distributed.elastic.multiprocessing.api"):
        logging.getLogger(name).addFilter(_QuietStops(reports))
    try:
        launch_command(launch_command_parser().parse_args(argv))
        return 0
    except Exception as exc:  # ChildFailedError, SignalException (the agent stopped the ranks), CalledProcessError
        line = stopped_line(reports)
        if line is not None:
            print(line, file=sys.stderr)
            return EXIT_STOPPED
        if isinstance(exc, SignalException):  # stopped before any checkpoint (e.g. Ctrl-C): the ranks said so
            return 128 + int(exc.sigval)
        raise
    finally:
        shutil.rmtree(reports, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(launcher_main(sys.argv[1:]))
