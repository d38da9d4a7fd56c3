"""`omnideft generate --jobs FILE --out DIR` as a user meets its faults: two runs into one folder at once, a rerun
with other settings, numbers out of range in a jobs line, a folder given as the jobs file (docs/reliability.md,
"Batch jobs")."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from omnideft.generate.settings import MAX_SEED
from tests.helpers import REPO, assert_one_line_error, run_cli_here

RENDER = ["--model", "tiny", "--steps", "1", "--height", "32", "--width", "32", "--no-progress"]
LINES = [{"prompt": "a red cube", "seed": 1}, {"prompt": "a blue ball", "seed": 2}]


def _jobs_file(path: Path, lines: list) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _generate(jobs: Path, out: Path, *extra: str):
    return run_cli_here("generate", *RENDER, "--jobs", str(jobs), "--out", str(out), *extra)


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_a_second_run_into_a_folder_in_use_is_refused_and_the_first_finishes(tmp_path):
    """Two real processes: the first holds DIR's lock while it reads its jobs from a FIFO, so the test knows (from
    the FIFO's open returning, no sleep) that the lock is held; the second is refused in one line naming it and
    writes nothing; the first then renders exactly what a run alone renders."""
    fifo, out = tmp_path / "jobs.fifo", tmp_path / "out"
    os.mkfifo(fifo)
    first = subprocess.Popen([sys.executable, "-m", "omnideft", "generate", *RENDER, "--jobs", str(fifo), "--out",
                              str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                             env=dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1"))

    def unblock_if_it_dies():  # should the first run die before opening the FIFO, the open below must not hang
        first.wait()
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))

    threading.Thread(target=unblock_if_it_dies, daemon=True).start()
    try:
        with open(fifo, "w") as feed:  # returns once the first run opened it: it reads its jobs under the lock
            assert first.poll() is None, first.communicate()[1][-3000:]
            second = _generate(_jobs_file(tmp_path / "same.jsonl", LINES), out)
            assert_one_line_error(second, f"--out {out} is in use by pid {first.pid} on host")
            assert sorted(p.name for p in out.iterdir()) == [".omnideft.lock"]  # the refused run wrote nothing
            feed.write("".join(json.dumps(line) + "\n" for line in LINES))
        _, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err[-3000:]
    alone = _generate(_jobs_file(tmp_path / "alone.jsonl", LINES), tmp_path / "alone")
    assert alone.returncode == 0, alone.stderr
    written, expected = _files(out), _files(tmp_path / "alone")
    assert sorted(written) == sorted(expected) == ["0001.png", "0001_sheet.png", "0002.png", "0002_sheet.png",
                                                   "jobs_report.json", "run.json"]
    assert all(written[name] == expected[name] for name in written if name.endswith(".png"))


def test_a_rerun_with_other_settings_is_refused_unless_overwrite(tmp_path):
    jobs = _jobs_file(tmp_path / "jobs.jsonl", LINES[:1])
    out = tmp_path / "out"
    assert _generate(jobs, out).returncode == 0
    first = _files(out)
    assert json.loads(first["run.json"])["inputs"]["steps"] == 1

    refused = _generate(jobs, out, "--steps", "2", "--guidance", "3")
    assert_one_line_error(refused, f"{out} holds images of other inputs", "guidance 2.5 there, 3.0 now",
                          "steps 1 there, 2 now", "another --out", "--overwrite")
    assert _files(out) == first  # nothing touched

    # The same settings resume: done lines are skipped, and a temporary copy a killed run left is swept.
    (out / ".tmp-0002.png.999999").write_bytes(b"half an image")
    again = _generate(jobs, out)
    assert again.returncode == 0 and "0 done, 1 already done" in again.stderr
    assert _files(out)["0001.png"] == first["0001.png"] and not list(out.glob(".tmp-*"))

    # --overwrite deletes the old images first (no old image can pass for a new one) and renders every line again.
    (out / "0007_sheet.png").write_bytes(first["0001_sheet.png"])  # a line of an earlier, longer jobs file
    redone = _generate(jobs, out, "--steps", "2", "--overwrite")
    assert redone.returncode == 0 and "1 done, 0 already done" in redone.stderr
    now = _files(out)
    assert now["0001.png"] != first["0001.png"] and "0007_sheet.png" not in now
    assert json.loads(now["run.json"])["inputs"]["steps"] == 2

    # A folder of images with no record of their settings (an older omnideft) is not taken as done either.
    (out / "run.json").unlink()
    assert_one_line_error(_generate(jobs, out, "--steps", "2"), "without a record of the settings", "--overwrite")
    # With no image left (every line failed, say), a record of other settings guards nothing: the folder is taken.
    (out / "run.json").write_text(now["run.json"].decode())
    for image in out.glob("*.png"):
        image.unlink()
    assert _generate(jobs, out, "--steps", "3").returncode == 0
    assert json.loads((out / "run.json").read_text())["inputs"]["steps"] == 3


def test_numbers_out_of_range_are_reported_per_line_and_the_rest_run(tmp_path):
    """Every number of a line is checked against the command line's ranges (one table, generate/settings.py):
    the bad lines are reported by number, the good one is rendered, the report is written, exit 1."""
    lines = [{"prompt": "seed too big", "seed": 99999999999999999999999},
             {"prompt": "good", "seed": MAX_SEED},
             {"prompt": "no height", "height": 0},
             {"prompt": "not a multiple", "width": 40},
             {"prompt": "seed as bool", "seed": True},
             {"prompt": "negative seed", "seed": -1},
             {"prompt": "last image past the last seed", "seed": MAX_SEED, "n": 2},
             {"prompt": "float height", "height": 32.0},
             {"prompt": "no image", "n": 0}]
    out = tmp_path / "out"
    proc = _generate(_jobs_file(tmp_path / "jobs.jsonl", lines), out)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    err = proc.stderr
    assert f"line 1: 'seed' is 99999999999999999999999; allowed: [0, {MAX_SEED}]" in err
    assert "line 3: 'height' is 0; allowed: >= 16" in err
    assert "line 4: 'width' is 40; allowed: a multiple of 16, >= 16" in err
    assert "line 5: 'seed' must be an integer, got True" in err and "line 6: 'seed' is -1" in err
    assert f"line 7: 'seed' {MAX_SEED} with n 2" in err and "line 8: 'height' must be an integer" in err
    assert "line 9: 'n' is 0; allowed: >= 1" in err
    report = json.loads((out / "jobs_report.json").read_text())
    assert report["done"] == [2] and sorted(report["failed"], key=int) == ["1", "3", "4", "5", "6", "7", "8", "9"]
    assert (out / "0002_sheet.png").is_file()
    # the command line's own check of the same number says the same
    single = run_cli_here("generate", *RENDER[:2], "--prompt", "x", "--height", "0", "--out", str(tmp_path / "x.png"))
    assert_one_line_error(single, "--height is 0; allowed: >= 16")


def test_a_folder_given_as_the_jobs_file_is_one_line(tmp_path):
    proc = run_cli_here("generate", *RENDER, "--jobs", str(tmp_path), "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, f"--jobs {tmp_path} is a folder, not a JSONL file")
    assert not (tmp_path / "out").exists()
