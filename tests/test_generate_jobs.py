"""`omnideft generate --jobs FILE.jsonl --out DIR`, the checked generate options (sizes, guidance, --out), inputs
bigger than the model's range, default sizes the model can render, and `from omnideft import Generator`."""

import json

import numpy as np
import pytest
from PIL import Image

from omnideft.cli import main as cli_main
from omnideft.errors import UserError
from omnideft.generate.jobs import read_jobs
from tests.helpers import assert_one_line_error, run_cli_here
from tests.studio_world import write_images


def _jobs_file(tmp_path, lines, name="jobs.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


@pytest.fixture
def images(tmp_path):
    return write_images(tmp_path, {"a": (32, 32), "b": (32, 32), "q": (48, 32)})


def test_jobs_run_report_bad_lines_and_skip_what_exists(tmp_path, images, capsys):
    lines = [
        {"prompt": "make <img><|image_1|></img> like the example", "images": ["q.png"],
         "examples": [["a.png", "b.png"]], "seed": 1},
        {"prompt": "a red cube", "height": 32, "width": 16, "n": 2, "seed": 3},
        {"prompt": "x", "colour": "red"},  # unknown key
        "",  # blank lines are skipped, not jobs
        {"prompt": "x", "images": ["missing.png"]},
        {"prompt": "two <img><|image_2|></img>", "images": ["q.png"]},  # placeholder without its image
        "{not json",
        {"prompt": "too wide", "width": 1024, "height": 32},  # fails at render time: the tiny model's limit is 512
    ]
    jobs = _jobs_file(tmp_path, lines)
    out = tmp_path / "out"
    argv = ["generate", "--model", "tiny", "--jobs", str(jobs), "--out", str(out), "--steps", "1", "--no-progress"]
    assert cli_main(argv) == 1  # some lines failed; the others are written
    err = capsys.readouterr().err
    assert "line 3: unknown key colour" in err and "line 5:" in err and "missing.png" in err
    assert "line 6:" in err and "<|image_2|>" in err and "line 7: not JSON" in err
    assert "line 8: width 1024 is more than this model can do" in err
    assert Image.open(out / "0001.png").size == (48, 32)  # the query's size
    assert [Image.open(out / f"0002_{k}.png").size for k in range(2)] == [(16, 32)] * 2
    assert Image.open(out / "0001_sheet.png").width == 4 * 128  # example in, example out, query, output
    assert Image.open(out / "0002_sheet.png").height == 2 * (128 + 14)  # one row per image
    report = json.loads((out / "jobs_report.json").read_text())
    assert report["done"] == [1, 2] and report["skipped"] == []
    assert sorted(report["failed"]) == ["3", "5", "6", "7", "8"]
    assert not list(out.glob(".tmp-*")) and not (out / "0008.png").exists()

    # n = 2 images equal seeds 3 and 4 alone; a rerun skips the finished lines and writes nothing new
    mtime = (out / "0001.png").stat().st_mtime_ns
    single = _jobs_file(tmp_path, [{"prompt": "a red cube", "height": 32, "width": 16, "seed": 4}], "one.jsonl")
    assert cli_main(["generate", "--model", "tiny", "--jobs", str(single), "--out", str(tmp_path / "one"),
                     "--steps", "1", "--no-progress"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "one" / "0001.png")),
                          np.asarray(Image.open(out / "0002_1.png")))
    assert cli_main(argv) == 1
    report = json.loads((out / "jobs_report.json").read_text())
    assert report["done"] == [] and report["skipped"] == [1, 2]
    assert (out / "0001.png").stat().st_mtime_ns == mtime


def _one_line_error(capsys, argv, *needles):
    """In-process CLI: exit 2 and exactly one `error:` line holding every needle (run_cli shows the same in a
    subprocess, tests/test_generate.py)."""
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(n in lines[0] for n in needles), (needles, lines[0])


def test_jobs_file_errors_and_conflicts(tmp_path, images, capsys):
    out = str(tmp_path / "out")
    _one_line_error(capsys, ["generate", "--model", "tiny", "--jobs", str(tmp_path / "none.jsonl"), "--out", out],
                    "none.jsonl", "does not exist")
    jobs = _jobs_file(tmp_path, [{"prompt": "x"}])
    _one_line_error(capsys, ["generate", "--model", "tiny", "--jobs", str(jobs), "--prompt", "y", "--out", out],
                    "--jobs", "--prompt")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is a file"):
        from omnideft.generate.jobs import run_jobs

        run_jobs(jobs, tmp_path / "file", lambda: None, lambda g, j: [], {})
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(UserError, match="has no job"):
        read_jobs(empty)
    good, bad = read_jobs(_jobs_file(tmp_path, [{"prompt": "x", "n": 0}, {"prompt": "y", "camera": [1, 2]},
                                                {"prompt": "z", "seed": "7"}, {"prompt": "w", "camera": [
                                                    0.9, 0.5, 0.5, 0, 1, 0, 0, 0, 0, 0, 2]}]))
    assert [j.line for j in good] == [4] and len(good[0].camera) == 11
    assert "'n' is 0; allowed: >= 1" in bad[1] and "2 numbers" in bad[2] and "'seed' must be an integer" in bad[3]


def test_generate_options_are_checked_in_one_line(tmp_path, capsys):
    out = str(tmp_path / "o.png")
    base = ["generate", "--model", "tiny", "--prompt", "x", "--out"]
    _one_line_error(capsys, [*base, out, "--height", "40"], "--height is 40", "multiple of 16")
    _one_line_error(capsys, [*base, out, "--width=-16"], "--width is -16", "allowed: >= 16")
    _one_line_error(capsys, [*base, out, "--guidance", "nan"], "--guidance is nan", "finite")
    _one_line_error(capsys, [*base, out, "--steps", "0"], "--steps is 0", "allowed: >= 1")
    _one_line_error(capsys, [*base, str(tmp_path)], "--out", "is a folder")
    _one_line_error(capsys, ["generate", "--model", "tiny", "--out", out], "--prompt is required")
    _one_line_error(capsys, [*base, out, "--example", f"{tmp_path / 'nope.png'}={tmp_path / 'b.png'}"],
                    "nope.png", "does not exist")
    assert not (tmp_path / "o.png").exists()
    assert_one_line_error(run_cli_here(*base, out, "--image-guidance", "inf"), "--image-guidance is inf", "finite")


def test_big_inputs_are_resized_to_fit_and_defaults_fit_the_model(tmp_path, capsys):
    """The tiny model's position table holds 512 px a side: a 640 px query is resized to fit (default
    --max-input-image-size 1024 is lowered), and without a query the output is 512, not OmniGen's 1024."""
    paths = write_images(tmp_path, {"big": (640, 320)})
    out = tmp_path / "o.png"
    assert cli_main(["generate", "--model", "tiny", "--prompt", "x", "--image", str(paths["big"]), "--steps", "1",
                     "--out", str(out)]) == 0
    assert Image.open(out).size == (512, 256)
    orbit = ["generate", "--model", "tiny", "--prompt", "x", "--steps", "1", "--frames", "2", "--orbit",
             "0.9,0.5,0.5,0,1,0,0,0,0,0,2", "0.9,0.5,0.5,0,1,0,0,0,0,0,3", "--out", str(tmp_path / "orbit.gif")]
    assert cli_main(orbit) == 0, capsys.readouterr().err
    assert Image.open(tmp_path / "orbit_frames" / "frame_000.png").size == (512, 512)


def test_generator_is_exported_lazily():
    import os
    import subprocess
    import sys

    from tests.helpers import REPO

    code = ("import sys, omnideft; assert 'torch' not in sys.modules; from omnideft import Generator; "
            "import omnideft.families.generator as m; assert Generator is m.FamilyGenerator; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_speed_options_reach_the_generator(tmp_path, monkeypatch, capsys):
    from omnideft.generate import run

    seen = {}

    def fake(model, adapters, **kw):
        seen.update(kw)
        raise UserError("stop here")

    monkeypatch.setattr(run.FamilyGenerator, "from_pretrained", fake)
    argv = ["generate", "--model", "tiny", "--prompt", "x", "--out", str(tmp_path / "o.png")]
    assert cli_main(argv) == 2
    assert (seen["merge"], seen["kv_cache"], seen["separate_cfg"], seen["offload"], seen["offload_kv_cache"]) == \
        (True, True, False, False, False)
    assert cli_main(argv + ["--no-merge", "--no-kv-cache", "--separate-cfg", "--offload", "--offload-kv-cache"]) == 2
    assert (seen["merge"], seen["kv_cache"], seen["separate_cfg"], seen["offload"], seen["offload_kv_cache"]) == \
        (False, False, True, True, True)
