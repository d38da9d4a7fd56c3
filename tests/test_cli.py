"""The CLI's wiring to the rooms: exit codes and one-line errors."""

from omnideft.shapes.shards import write_task_shards
from tests.helpers import assert_one_line_error, run_cli


def test_no_command_prints_help_exit_2():
    proc = run_cli()
    assert proc.returncode == 2 and "train" in proc.stdout and "generate" in proc.stdout


def test_check_shards_ok_and_broken(tmp_path):
    split = write_task_shards(tmp_path / "s", ["fill"], n_samples=4, size=32, shard_size=2, n_examples=1)
    ok = run_cli("check-shards", str(split))
    assert ok.returncode == 0, ok.stderr[-2000:]
    shard = sorted(split.glob("*.tar"))[0]
    shard.write_bytes(shard.read_bytes()[:-700])  # truncated: checksum and members break
    bad = run_cli("check-shards", str(split))
    assert bad.returncode == 2 and shard.name in bad.stdout + bad.stderr


def test_convert_original_missing_source_is_one_line(tmp_path):
    assert_one_line_error(run_cli("convert-original", str(tmp_path / "nope"), str(tmp_path / "out")), "nope")
