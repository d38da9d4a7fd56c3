"""The screenshot in docs/studio.md: the studio on the shipped `small` base with the demo's adapter answering a
held-out sample of the new task the demo teaches.

    omnideft demo --out demo_out
    python scripts/studio_screenshot.py demo_out [--out docs/studio.png]

Starts `omnideft studio --model small --adapters demo_out --examples demo_out/heldout_b/train` on a free port of
127.0.0.1 and drives Debian's headless Chromium with Selenium: loads the new task's preset (examples, query, prompt
and true target), ticks the demo's adapter, sets the small base's 20 sampling steps, generates, and saves the top of
the page as a 128-colour PNG (written under a temporary name, then renamed). Needs omnideft[studio], selenium,
/usr/bin/chromium and /usr/bin/chromedriver; about 15 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,2200"]
STEPS = 20  # the small base's sampling steps
START_WAIT, PAGE_WAIT, GENERATE_WAIT = 900, 120, 1200  # seconds; every wait ends as soon as its condition holds


class Failed(Exception):
    """One line for the user."""


def wait_for(condition, what: str, timeout: float = PAGE_WAIT, alive=None):
    """Poll `condition()` until it returns something true (exceptions count as not yet) or the deadline passes;
    `alive()` returning an error message stops the wait early."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception:
            value = None
        if value:
            return value
        if alive is not None and (problem := alive()):
            raise Failed(problem)
        if time.monotonic() > deadline:
            raise Failed(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def demo_parts(demo_out: Path) -> tuple[Path, Path, str]:
    """The demo folder's adapter, held-out shards of the new task and that task's preset name, or a Failed."""
    adapter, heldout = demo_out / "adapter", demo_out / "heldout_b" / "train"
    manifest = heldout / "manifest.json"
    if not ((adapter / "adapter_model.safetensors").is_file() and (demo_out / "report.json").is_file()
            and manifest.is_file() and any(heldout.glob("*.tar"))):
        raise Failed(f"{demo_out} is not a folder written by `omnideft demo --out` (it needs adapter/, "
                     "heldout_b/train/ shards and report.json)")
    try:
        tasks = list(json.loads(manifest.read_text())["tasks"])
    except (ValueError, KeyError, TypeError):
        tasks = []
    if not tasks:
        raise Failed(f"{manifest} names no task")
    return adapter, heldout, tasks[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_studio(demo_out: Path, work: Path) -> tuple[subprocess.Popen, str, str]:
    """`omnideft studio` run from `work`, where a link to the demo folder keeps the page's paths short and
    relative (demo_out/adapter, outputs/...); returns the process, its address and the adapter's label."""
    name = demo_out.resolve().name
    (work / name).symlink_to(demo_out.resolve(), target_is_directory=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1")
    log = open(work / "studio.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "omnideft", "studio", "--model", "small", "--adapters", name,
                             "--examples", f"{name}/heldout_b/train", "--port", str(port), "--outputs", "outputs"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=work, env=env, text=True)
    log.close()

    def alive():
        if proc.poll() is not None:
            lines = (work / "studio.log").read_text().strip().splitlines() or ["(no output)"]
            return f"omnideft studio exited with code {proc.returncode}: {lines[-1]}"

    wait_for(lambda: f"omnideft studio: {url}" in (work / "studio.log").read_text(), "the studio to start",
             START_WAIT, alive)
    return proc, url, f"{name}/adapter"


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def drive(driver, url: str, task: str, adapter_label: str, shot: Path) -> tuple[str, str]:
    """Load the preset, tick the adapter, generate, screenshot; returns the preset note and the report."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    def css(selector):
        return driver.find_elements(By.CSS_SELECTOR, selector)

    def text(elem_id):
        return css(f"#{elem_id}")[0].text

    driver.get(url)
    wait_for(lambda: css("#generate") and css("#prompt textarea") and css("#preset-task input"), "the page")

    css("#preset-task input")[0].click()  # a Gradio dropdown: open it, click the entry
    wait_for(lambda: next(li for li in css("#preset-task li[role=option]")
                          if li.get_attribute("aria-label") == task), f"the preset {task}").click()
    css("#preset-load")[0].click()
    note = wait_for(lambda: f"Preset {task}" in (t := text("preset-note")) and t, "the preset note")
    for elem_id in ("example-1-in", "example-1-out", "query", "target"):
        wait_for(lambda: css(f"#{elem_id} img"), f"the preset's image in #{elem_id}")

    box = wait_for(lambda: next(b for b in css("[id^=adapter-][id$=-use]") if b.text.strip() == adapter_label),
                   f"the adapter {adapter_label}")
    tick = box.find_element(By.CSS_SELECTOR, "input")
    if not tick.is_selected():
        tick.click()
    wait_for(tick.is_selected, f"{adapter_label} ticked")

    steps = css("#steps input[type=number]")[0]
    steps.send_keys(Keys.CONTROL, "a")
    steps.send_keys(str(STEPS), Keys.TAB)
    wait_for(lambda: float(css("#steps input[type=number]")[0].get_attribute("value")) == STEPS, f"{STEPS} steps")

    css("#generate")[0].click()
    report = wait_for(lambda: ("Generation #" in (t := text("message")) or "Error:" in t) and t,
                      "the generation report", GENERATE_WAIT)
    if "Error:" in report:
        raise Failed(f"the page reported {report.strip().splitlines()[0]}")
    wait_for(lambda: any((img.get_attribute("src") or "").startswith(url) for img in css("#result img")),
             "the result image")
    driver.execute_script("window.scrollTo(0, 0)")
    wait_for(lambda: driver.execute_script("return window.scrollY") == 0, "the top of the page")
    driver.save_screenshot(str(shot))
    return note, report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="docs/studio.png: the studio with the demo's adapter on a preset of "
                                             "the new task")
    ap.add_argument("demo_out", metavar="DEMO_OUT", help="the folder `omnideft demo --out DEMO_OUT` wrote")
    ap.add_argument("--out", default="docs/studio.png", help="the PNG to write (default docs/studio.png)")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    proc = driver = None
    work = Path(tempfile.mkdtemp(prefix="studio-shot-"))
    try:
        adapter, _, task = demo_parts(Path(args.demo_out))
        missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
        if missing:
            raise Failed(f"needs {' and '.join(missing)} (apt-get install chromium chromium-driver)")
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
        except ImportError:
            raise Failed("needs selenium: pip install 'omnideft[studio,test]'") from None
        out = Path(args.out)
        if not out.parent.is_dir():
            raise Failed(f"no folder {out.parent} for --out")

        proc, url, label = start_studio(Path(args.demo_out), work)
        print(f"studio: {url} (base small, adapters {label}, presets {task})", flush=True)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS + [f"--user-data-dir={work / 'chromium'}"]:
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # no Selenium Manager download
        note, report = drive(driver, url, task, label, work / "page.png")

        page = Image.open(work / "page.png").convert("RGB")
        tmp = out.with_name(f".tmp-{out.name}")
        page.quantize(colors=128).save(tmp, format="PNG", optimize=True)  # legible at a third of the bytes
        os.replace(tmp, out)
        print(f"preset: {' '.join(note.split())}")
        print(f"adapter: {label} ({adapter}) ticked, weight 1, {STEPS} steps")
        print(f"report: {report.strip().splitlines()[0]}")
        print(f"wrote {out} ({page.width}×{page.height}, {out.stat().st_size // 1024} KB) in "
              f"{time.monotonic() - t0:.0f} s")
        return 0
    except Failed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if proc is None else 1
    finally:
        if driver is not None:
            driver.quit()
        if proc is not None:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)  # the link to the demo folder is removed, not followed


if __name__ == "__main__":
    sys.exit(main())
