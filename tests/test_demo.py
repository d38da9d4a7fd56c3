import json

from PIL import Image

from tests.helpers import run_cli


def test_demo_end_to_end_small(tmp_path):
    out = tmp_path / "demo"
    proc = run_cli("demo", "--out", str(out), "--steps", "120", "--samples", "24", "--vae-steps", "80",
                   "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for f in ("report.md", "report.json", "loss.png", "samples.png", "metrics.jsonl"):
        assert (out / f).is_file(), f
    for sub in ("transformer", "vae", "tokenizer", "scheduler"):
        assert (out / "base" / sub).is_dir()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    r = json.loads((out / "report.json").read_text())
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 120 == r["steps"]
    assert r["loss_end"] < 0.85 * r["loss_start"], r  # the loss falls clearly
    assert r["heldout_loss_adapted"] < r["heldout_loss_base"], r
    assert f"{r['loss_drop_pct']:.1f} %" in (out / "report.md").read_text()
    assert r["vae_steps"] == 80 and r["vae_reconstruction_mse"] < 0.5  # the VAE fit ran and learned something
    assert Image.open(out / "samples.png").height > 3 * 96


def test_eval_tables_from_demo_run(tmp_path):
    out = tmp_path / "demo"
    assert run_cli("demo", "--out", str(out), "--steps", "60", "--samples", "16", "--vae-steps", "0",
                   "--no-progress").returncode == 0
    proc = run_cli("eval", "--model", str(out / "base"), "--adapter", str(out / "adapter"), "--shards",
                   str(out / "shards_heldout"), "--out", str(tmp_path / "ev"), "--samples", "8",
                   "--max-image-size", "64")
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "ev.json").read_text())["results"]
    assert set(res) == {"base", str(out / "adapter")}
    assert res[str(out / "adapter")]["all"] < res["base"]["all"]
    assert (tmp_path / "ev.csv").read_text().startswith("model,demo/conditional_generation/edges,all")
    assert "| base |" in (tmp_path / "ev.md").read_text()
