"""Signals reach every process of a run, and the exit code says what happened (docs/reliability.md, "Signals reach
every process"): a SIGTERM to `omnideft train` stops its launcher and both ranks with a checkpoint, exit 75 and one
line, leaving no process behind; ranks that stopped become one line and 75 at the launcher; a builder with workers
stops on SIGTERM with one line (no native stack dumps); progress in a log file is plain lines."""

import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import yaml
from PIL import Image

from omnideft.train import launch
from omnideft.train.signals import EXIT_STOPPED, OTHER_RANK, TrainingStopped
from tests.faults.conftest import BASE
from tests.helpers import REPO, free_port, run_cli_here

STOP_LINE = "omnideft: stopped by SIGTERM at step"


def _wait_for(predicate, proc, what: str, timeout: float = 240):
    """Poll a real event (a file appearing), bounded; fail if the process ended first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the process ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def _gone(pids: list[int]) -> list[int]:
    """PIDs still running (zombies count as gone: they ran to their end)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_sigterm_to_omnideft_train_stops_launcher_and_ranks_with_a_checkpoint(fault_shards, tmp_path):
    """Before: `omnideft train` died at once and its launcher and both ranks ran on as orphans to the last step."""
    cfg = yaml.safe_load((REPO / "recipes" / "launch" / "cpu_2proc_ddp.yaml").read_text())
    cfg["main_process_port"] = free_port()
    (tmp_path / "launch.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "omnideft", "train", *BASE, "train.max_steps=200", "data.num_workers=1",
           f"data.shards=[{fault_shards}]", f"output.dir={out}", f"launch.config={tmp_path / 'launch.yaml'}"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), DS_ACCELERATOR="cpu")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (out / "checkpoints" / "step-0000002").is_dir(), proc, "checkpoint at step 2")
        tree = psutil.Process(proc.pid).children(recursive=True)  # launcher, 2 ranks, their loader workers
        assert len(tree) >= 5, tree
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_STOPPED, err[-3000:]
    assert "Traceback" not in err and "FAILED" not in err, err[-3000:]
    stops = [line for line in err.splitlines() if line.startswith("omnideft: stopped")]
    assert len(stops) == 1 and stops[0].startswith(STOP_LINE) and "--resume latest" in stops[0], err[-3000:]
    step = int(stops[0][len(STOP_LINE):].split(";")[0])
    assert step >= 2 and (out / "checkpoints" / f"step-{step:07d}" / "trainer" / "state.json").is_file()
    assert _gone([p.pid for p in tree]) == []  # the parent waited for everything it started


def _rank_stops(monkeypatch, *stops: tuple[int, str]):
    """What the ranks do under omnideft's launcher: write a stop report each (instead of a line)."""
    for rank, signame in stops:
        monkeypatch.setenv("RANK", str(rank))
        assert launch.report_stop(TrainingStopped(signame, 3, "run/checkpoints/step-0000003"))


@pytest.mark.parametrize("raised", ["ChildFailedError", "SignalException"])
def test_ranks_that_stopped_become_one_line_and_exit_75_at_the_launcher(monkeypatch, capsys, raised):
    """Before: SIGTERM to rank 1 -> both ranks checkpointed and exited 75, but torch elastic's agent reported
    "omnideft FAILED" with a traceback and `omnideft train` exited 1."""
    import accelerate.commands.launch as accelerate_launch
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure
    from torch.distributed.run import get_args_parser

    for name in (launch.STOP_REPORTS_ENV, "PET_SIGNALS_TO_HANDLE", "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)  # launcher_main sets them; restored after the test
    seen = {}

    def ranks_stop(args):  # rank 1 received the signal, rank 0 followed it; then the agent raises
        seen["reports"] = os.environ[launch.STOP_REPORTS_ENV]
        seen["signals"] = get_args_parser().parse_args(["train.py"]).signals_to_handle  # as accelerate reads them
        _rank_stops(monkeypatch, (0, OTHER_RANK), (1, "SIGTERM"))
        if raised == "ChildFailedError":
            raise ChildFailedError("omnideft", {0: ProcessFailure(0, 1, EXIT_STOPPED, "")})
        raise SignalException("got signal 15", sigval=signal.SIGTERM)

    monkeypatch.setattr(accelerate_launch, "launch_command", ranks_stop)
    code = launch.launcher_main(["--config_file", "x.yaml", "-m", "omnideft", "train"])
    err = capsys.readouterr().err
    assert code == EXIT_STOPPED
    assert err.splitlines() == [f"{STOP_LINE} 3; checkpoint run/checkpoints/step-0000003; continue with "
                                "`omnideft train RECIPE --resume latest`"]
    assert "SIGUSR1" in seen["signals"]  # the agent passes SLURM's preemption warning on instead of dying of it
    assert not os.path.exists(seen["reports"])


def test_a_launcher_failure_without_a_stop_is_not_a_stop(monkeypatch):
    """A rank that failed (no stop report) keeps the agent's report and its exit code; a rank outside omnideft's
    launcher prints its own stop line."""
    import accelerate.commands.launch as accelerate_launch
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    monkeypatch.delenv(launch.STOP_REPORTS_ENV, raising=False)
    assert not launch.report_stop(TrainingStopped("SIGTERM", 3, "c"))

    def rank_fails(args):
        raise ChildFailedError("omnideft", {1: ProcessFailure(1, 1, 2, "")})

    monkeypatch.setattr(accelerate_launch, "launch_command", rank_fails)
    with pytest.raises(ChildFailedError):
        launch.launcher_main(["--config_file", "x.yaml", "-m", "omnideft", "train"])


def _sfm_project(root, views: int):
    """A COLMAP model of VIEWS posed images, big enough that a 2-worker build is still running when signalled."""
    import pycolmap

    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(model="PINHOLE", width=256, height=192,
                                                    params=[200.0, 200.0, 128.0, 96.0], camera_id=1))
    rng = np.random.default_rng(0)
    for i in range(views):
        q = rng.normal(size=4)
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(q / np.linalg.norm(q)), rng.normal(size=3) * 3)
        rec.add_image_with_trivial_frame(pycolmap.Image(name=f"v{i}.jpg", camera_id=1, image_id=i + 1), pose)
    (root / "sparse").mkdir(parents=True)
    rec.write_binary(str(root / "sparse"))
    (root / "images").mkdir()
    image = Image.fromarray(rng.integers(0, 255, (192, 256, 3), dtype=np.uint8))
    for i in range(views):
        image.save(root / "images" / f"v{i}.jpg", quality=90)
    return root


def test_sigterm_to_a_builder_with_workers_is_one_line_and_the_rerun_finishes(tmp_path):
    """Before: importing pycolmap installs glog's failure handler, so the main process and each worker printed a
    26-43-line native stack dump ("*** SIGTERM received by PID ...")."""
    project, out = _sfm_project(tmp_path / "sfm", views=240), tmp_path / "out"
    cmd = [sys.executable, "-m", "data_builders.sfm", "--src", str(project / "sparse"), "--images",
           str(project / "images"), "--out", str(out), "--resolution", "128", "--context-views", "2",
           "--shard-size", "20", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([*cmd, "--workers", "2"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: any((out / "train").glob(".tmp-*")), proc, "a shard being written", timeout=60)
        workers = [p.pid for p in psutil.Process(proc.pid).children()]
        assert len(workers) == 2
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines() == ["stopped by SIGTERM: rerun the same command to resume"]
    assert _gone(workers) == []
    rerun = subprocess.run([*cmd, "--workers", "2"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "wrote 240 samples" in rerun.stdout


def test_progress_in_a_log_file_is_plain_lines(fault_shards, tmp_path):
    """Before: `set_postfix` redrew the training bar with '\\r' at every step (5834 bytes for 60 steps of the tiny
    recipe redirected to a file, 305 after; a log file gets one line per 30 s and the last)."""
    from omnideft.progress import progress_bar

    log = io.StringIO()  # not a terminal, like a file
    bar = progress_bar(total=500, desc="train", file=log)
    for _ in range(500):
        bar.set_postfix(loss="1.0")
        bar.update()
    bar.close()
    assert "\r" not in log.getvalue() and len(log.getvalue().splitlines()) == 1
    # the real thing: `omnideft train` with its bar on, stderr captured (not a terminal)
    flags = [x for x in BASE if x != "--no-progress"]
    proc = run_cli_here("train", *flags, "train.max_steps=2", "train.checkpoint_every=0",
                        f"data.shards=[{fault_shards}]", f"output.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stderr
    bars = [line for line in proc.stderr.splitlines() if line.startswith("train:")]
    assert len(bars) == 1 and "2/2" in bars[0], proc.stderr[-2000:]
