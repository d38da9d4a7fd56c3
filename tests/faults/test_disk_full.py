"""A full disk, for real: the child process runs under a file-size limit (RLIMIT_FSIZE), so the kernel fails its
writes (EFBIG) exactly as a full filesystem fails them (ENOSPC). One line naming the path, exit 2, no `.tmp-*`
leftovers, the previous file intact. The checkpoint case (ENOSPC injected while staging) is in
test_checkpoint_faults.py."""

import os
import subprocess
import sys

from tests.faults.conftest import tmp_leftovers
from tests.helpers import REPO, assert_one_line_error

# The limit is set by a small launcher that then execs Python: subprocess's preexec_fn is documented as unsafe when
# the parent has threads, and torch starts some in the test process.
LIMITED = ("import os, resource, sys; limit = int(sys.argv[1]); "
           "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); "
           "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])")


def _run(args, limit):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-c", LIMITED, str(limit), "-m", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)


def test_generate_into_a_full_disk_keeps_the_previous_image(finished_run, tmp_path):
    out = tmp_path / "out.png"
    out.write_bytes(b"the previous image")
    proc = _run(["omnideft", "generate", "--adapter", str(finished_run / "adapter"), "--prompt", "a red circle",
                 "--out", str(out), "--steps", "1", "--height", "32", "--width", "32"], limit=300)
    assert_one_line_error(proc, "cannot write", "File too large", "free there")
    assert out.read_bytes() == b"the previous image"
    assert tmp_leftovers(tmp_path) == []


def test_a_builder_on_a_full_disk_is_one_line_without_leftovers(tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    lines = []
    for i in range(4):
        Image.new("RGB", (64, 64), (i * 60, 10, 200)).save(images / f"{i}.png")
        lines.append(f'{{"instruction": "paint {i}", "output_image": "{i}.png"}}')
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    proc = _run(["data_builders.jsonl", "--src", str(tmp_path / "data.jsonl"), "--images", str(images), "--out",
                 str(out), "--resolution", "64", "--no-progress", "--workers", "1"], limit=4000)
    assert_one_line_error(proc, "cannot write", "File too large", "rerun to resume")
    assert tmp_leftovers(out) == [] and not (out / "train" / ".omnideft.lock").exists()
