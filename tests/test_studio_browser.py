"""`omnideft studio` in a real browser: headless Debian Chromium driven by Selenium against the app on 127.0.0.1.

Uploads, adapter weights, Generate, the result compared with the CLI's output for the command line the page
reports; presets; the camera orbit; bad start-up input and generation errors shown in the page. A screenshot of the
finished page is written to $OMNIDEFT_TEST_ARTIFACTS (default tests/artifacts/). Without Chromium the tests are
skipped on a developer's machine and fail in CI, where .ci/run installs it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import urllib.request
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnideft.cli import main as cli_main
from tests.helpers import REPO, free_port

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,2200"]
WAIT = 90  # seconds an element may take on a busy 2-core machine; waits end as soon as the page is ready
ARTIFACTS = Path(os.environ.get("OMNIDEFT_TEST_ARTIFACTS", REPO / "tests" / "artifacts"))

pytestmark = [pytest.mark.slow,  # gradio's own queue calls deprecated pandas options (not ours to fix)
              pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]


def _need_browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    try:
        import gradio  # noqa: F401
        import selenium  # noqa: F401
    except ImportError as exc:
        missing.append(exc.name)
    if missing:
        why = f"browser tests need {', '.join(missing)} (apt-get install chromium chromium-driver; pip install " \
              "'omnideft[studio,test]')"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


class App:
    """`omnideft studio` in a subprocess; ready once it prints its address."""

    def __init__(self, args: list[str], log: Path, cwd: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
                   GRADIO_TEMP_DIR=str(cwd / "uploads"))  # uploads below the app's folder: short relative paths
        with open(log, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "omnideft", "studio", *args, "--port", str(self.port)],
                                         stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=cwd)

    def wait_ready(self) -> None:
        for line in self.proc.stdout:  # blocks until the app prints a line or exits
            if line.startswith(f"omnideft studio: {self.url}"):
                return
        raise AssertionError(f"studio exited with {self.proc.wait()}: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class InProcessApp:
    """A second app in this process (a start-up without a model is cheap; a second interpreter is not)."""

    def __init__(self, studio):
        from omnideft.studio.app import start

        self.url = f"http://127.0.0.1:{(port := free_port())}"
        self.demo = start(studio, "127.0.0.1", port)

    def stop(self) -> None:
        self.demo.close()


@pytest.fixture(scope="module")
def apps(studio_world, tmp_path_factory):
    """`omnideft studio` on the test world, and an app started with a wrong model path and an empty adapters
    folder."""
    _need_browser()
    from omnideft.studio.session import Studio

    w = studio_world
    logs = tmp_path_factory.mktemp("studio_logs")
    rel = {k: str(v.relative_to(w["root"])) for k, v in w.items() if k != "root"}  # started as a user would
    good = App(["--model", rel["base"], "--adapters", "runs", "other", "cameras/adapter", "--examples",
                rel["heldout"], rel["sfm"], "--outputs", "outputs"], logs / "good.log", cwd=w["root"])
    bad = None
    try:
        bad = InProcessApp(Studio(str(logs / "no_model"), [str(w["empty"])], [], outputs=str(logs / "bad_out")))
        good.wait_ready()
        yield {"good": good, "bad": bad}
    finally:
        good.stop()
        if bad is not None:
            bad.stop()


@pytest.fixture(scope="module")
def browser(apps, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # no Selenium Manager download
    yield driver
    driver.quit()


# ---- page helpers -----------------------------------------------------------------------------------------------
def by_css(driver, css):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def all_css(driver, css):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def wait_for(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, ignored_exceptions=(Exception,)).until(
        lambda d: condition(d), message=f"page never showed {what}")


def open_page(driver, url: str) -> None:
    driver.get(url)
    # Gradio renders the page in parts: under load the button can be there before the prompt box
    wait_for(driver, lambda d: all_css(d, "#generate") and all_css(d, "#prompt textarea"), "the Generate button")


def upload(driver, elem_id: str, *paths) -> None:
    by_css(driver, f"#{elem_id} input[type=file]").send_keys("\n".join(str(p) for p in paths))


def set_number(driver, elem_id: str, value) -> None:
    """Type into a slider's or number's box (Gradio updates on input; Tab leaves the box)."""
    from selenium.webdriver.common.keys import Keys

    box = by_css(driver, f"#{elem_id} input[type=number]")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.TAB)
    wait_for(driver, lambda d: float(by_css(d, f"#{elem_id} input[type=number]").get_attribute("value")) ==
             float(value), f"{elem_id} = {value}")


def text_of(driver, elem_id: str) -> str:
    return by_css(driver, f"#{elem_id}").text


def prompt_value(driver) -> str:
    return by_css(driver, "#prompt textarea").get_attribute("value")


def choose(driver, elem_id: str, option: str) -> None:
    """Pick `option` in a Gradio dropdown: open it, click the entry."""
    by_css(driver, f"#{elem_id} input").click()
    entry = wait_for(driver, lambda d: next(li for li in all_css(d, f"#{elem_id} li[role=option]")
                                            if li.get_attribute("aria-label") == option),
                     f"option {option} of {elem_id}")
    entry.click()


def busy(driver, elem_id: str) -> bool:
    tracker = all_css(driver, f"#{elem_id} [data-testid=status-tracker]")
    return bool(tracker) and "hide" not in tracker[0].get_attribute("class").split()


def generate_and_wait(driver, button: str = "generate") -> str:
    """Click, wait until the page has taken the press (the message is cleared or busy), then until the message
    area reports this generation or an error; returns its text."""
    before = text_of(driver, "message")
    by_css(driver, f"#{button}").click()
    wait_for(driver, lambda d: busy(d, "message") or text_of(d, "message") != before, "the press taken")
    return wait_for(driver, lambda d: not busy(d, "message") and (t := text_of(d, "message")) and
                    ("Generation #" in t or "Error:" in t) and t, "a generation report")


def result_images(driver, url: str) -> list[np.ndarray]:
    out = []
    for img in all_css(driver, "#result img"):
        src = img.get_attribute("src")
        if src and src.startswith(url):
            out.append(np.asarray(Image.open(BytesIO(urllib.request.urlopen(src, timeout=30).read())).convert("RGB")))
    return out


def run_reported_command(line: str, out: Path, cwd: Path) -> np.ndarray:
    """The command line as the page reports it, run in-process from the folder the app runs in."""
    argv = shlex.split(line)
    assert argv[:2] == ["omnideft", "generate"], line
    argv = argv[1:]
    argv[argv.index("--out") + 1] = str(out)
    here = os.getcwd()
    os.chdir(cwd)
    try:
        assert cli_main(argv) == 0
    finally:
        os.chdir(here)
    return np.asarray(Image.open(out).convert("RGB"))


def adapter_index(driver, label: str) -> int:
    for box in all_css(driver, "[id^=adapter-][id$=-use]"):
        if box.text.strip() == label:
            return int(box.get_attribute("id").split("-")[1])
    raise AssertionError(f"no adapter {label} on the page")


# ---- tests ------------------------------------------------------------------------------------------------------
def test_generate_in_the_page_equals_the_cli(apps, browser, studio_world, tmp_path):
    w, d, url = studio_world, browser, apps["good"].url
    open_page(d, url)
    by_css(d, "#example-add").click()
    wait_for(d, lambda d: by_css(d, "#example-1-in").is_displayed(), "an example row")
    upload(d, "example-1-in", w["ex_in"])
    upload(d, "example-1-out", w["ex_out"])
    upload(d, "query", w["query"])
    wait_for(d, lambda d: prompt_value(d) == "<img><|image_1|></img>", "the query's tag in the prompt")
    upload(d, "inputs", w["more"])
    wait_for(d, lambda d: "<|image_2|>" in prompt_value(d), "the second image's tag in the prompt")
    by_css(d, "#prompt textarea").clear()
    by_css(d, "#prompt textarea").send_keys("draw it like")
    thumb = wait_for(d, lambda d: all_css(d, "#inputs button img, #inputs .thumbnail-item img")[0],
                     "the input image's thumbnail")
    thumb.click()  # clicking an input image inserts its tag
    wait_for(d, lambda d: prompt_value(d) == "draw it like <img><|image_2|></img>", "the clicked image's tag")
    by_css(d, "#query img").click()  # and the query's
    wait_for(d, lambda d: prompt_value(d) == "draw it like <img><|image_2|></img> <img><|image_1|></img>",
             "the query's tag inserted by a click")

    a, b = adapter_index(d, "runs/a/adapter"), adapter_index(d, "runs/b/adapter")
    by_css(d, f"#adapter-{a}-use input").click()
    by_css(d, f"#adapter-{b}-use input").click()
    set_number(d, f"adapter-{a}-weight", 0.5)
    set_number(d, f"adapter-{b}-weight", 0.75)
    set_number(d, "steps", 2)
    set_number(d, "seed", 7)
    report = generate_and_wait(d)
    assert "Generation #" in report and "32×32, seed 7" in report, report
    assert "runs/a/adapter × 0.5" in report and "runs/b/adapter × 0.75" in report
    wait_for(d, lambda d: result_images(d, url), "the result image")
    (shown,) = result_images(d, url)
    command = by_css(d, "#command textarea").get_attribute("value")
    assert command.count("omnideft generate") == 1 and "--example" in command and command.count(" --image ") == 2
    assert "--image uploads/" in command and "--adapter runs/a/adapter:0.5" in command  # relative to the app
    cli = run_reported_command(command, tmp_path / "cli.png", w["root"])
    assert shown.shape == (32, 32, 3) and np.array_equal(shown, cli)  # the page shows the CLI's pixels
    assert "draw it like" in text_of(d, "history")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    d.execute_script("window.scrollTo(0, 0)")
    d.save_screenshot(str(ARTIFACTS / "studio.png"))
    # the copy for docs/studio.png: a 128-colour palette keeps the page legible at a third of the bytes
    page = Image.open(ARTIFACTS / "studio.png").convert("RGB")
    page.quantize(colors=128).save(ARTIFACTS / "studio-docs.png", optimize=True)
    assert page.width > 1000 and (ARTIFACTS / "studio-docs.png").stat().st_size < 500_000


def test_a_generation_error_is_a_message_and_the_app_keeps_serving(apps, browser, studio_world):
    d = browser
    open_page(d, apps["good"].url)
    upload(d, "query", studio_world["query"])
    wait_for(d, lambda d: "<|image_1|>" in prompt_value(d), "the query's tag")
    by_css(d, "#prompt textarea").send_keys(" and <img><|image_4|></img>")
    set_number(d, "steps", 1)
    report = generate_and_wait(d)
    assert report.startswith("Error:") and "<|image_4|>" in report and "Traceback" not in d.page_source
    by_css(d, "#prompt textarea").clear()
    by_css(d, "#prompt textarea").send_keys("a cat <img><|image_1|></img>")
    assert "Generation #" in generate_and_wait(d)


def test_preset_fills_examples_query_prompt_and_shows_the_target(apps, browser):
    d = browser
    open_page(d, apps["good"].url)
    choose(d, "preset-task", "shapes/a/fill")
    by_css(d, "#preset-load").click()
    wait_for(d, lambda d: "Preset shapes/a/fill" in text_of(d, "preset-note"), "the preset note")
    assert prompt_value(d).startswith("fill the edges <img><|image_1|></img> with ")
    assert by_css(d, "#example-1-in").is_displayed()
    assert not any(e.is_displayed() for e in all_css(d, "#example-2-in"))  # one example row: the sample's one pair
    for elem_id in ("example-1-in", "example-1-out", "query", "target"):
        wait_for(d, lambda d: all_css(d, f"#{elem_id} img"), f"an image in {elem_id}")
    set_number(d, "steps", 100)
    set_number(d, "n-images", 3)
    by_css(d, "#generate").click()
    from selenium.webdriver.support.ui import WebDriverWait

    bar = WebDriverWait(d, WAIT, poll_frequency=0.05).until(  # the progress bar while it samples
        lambda d: "sampling" in (t := text_of(d, "result")) and re.search(r"(\d+)/300 steps", t),
        message="no progress bar")
    assert 0 <= int(bar.group(1)) < 300
    wait_for(d, lambda d: not busy(d, "message") and "Generation #" in text_of(d, "message"), "the report")
    assert len(result_images(d, apps["good"].url)) == 3
    assert by_css(d, "#target").is_displayed()  # the true target stays beside the result

    by_css(d, "#example-add").click()  # a second, empty row; removing the first moves it up
    wait_for(d, lambda d: by_css(d, "#example-2-in").is_displayed(), "a second example row")
    by_css(d, "#example-1-remove").click()
    wait_for(d, lambda d: not any(e.is_displayed() for e in all_css(d, "#example-2-in")), "one row left")
    assert not all_css(d, "#example-1-in img") and not all_css(d, "#example-1-out img")


def test_camera_views_render_an_orbit(apps, browser, studio_world):
    d = browser
    open_page(d, apps["good"].url)
    by_css(d, f"#adapter-{adapter_index(d, 'cameras/adapter')}-use input").click()
    choose(d, "camera-view", "view_000.png")
    choose(d, "orbit-view", "view_002.png")
    wait_for(d, lambda d: by_css(d, "#orbit-to textarea, #orbit-to input").get_attribute("value").count(",") == 10,
             "the orbit-to camera numbers")
    assert by_css(d, "#camera textarea, #camera input").get_attribute("value").count(",") == 10
    upload(d, "query", studio_world["query"])
    set_number(d, "steps", 1)
    set_number(d, "orbit-frames", 3)
    report = generate_and_wait(d, "orbit")
    assert "Generation #" in report and "Error" not in report, report
    srcs = [img.get_attribute("src") for img in all_css(d, "#result img")]
    assert any(s.endswith(".gif") for s in srcs), srcs
    command = by_css(d, "#command textarea").get_attribute("value")
    assert "--orbit" in command and "--frames 3" in command


def test_start_up_problems_and_another_base_are_shown(apps, browser, studio_world):
    d = browser
    open_page(d, apps["good"].url)
    other = adapter_index(d, "other/adapter")
    assert "Cannot be used: trained on another base" in text_of(d, f"adapter-{other}-info")
    assert not by_css(d, f"#adapter-{other}-use input").is_enabled()

    open_page(d, apps["bad"].url)
    status = text_of(d, "status")
    assert re.search(r"model \S*no_model could not be loaded", status), status
    assert f"no adapter folder under {studio_world['empty']}" in status
    by_css(d, "#prompt textarea").send_keys("a cat")
    report = generate_and_wait(d)
    assert report.startswith("Error: no model is loaded"), report



def test_a_port_in_use_is_one_line(apps, tmp_path):
    from omnideft.errors import UserError
    from omnideft.studio.app import start
    from omnideft.studio.session import Studio

    with pytest.raises(UserError, match=f"studio cannot listen on 127.0.0.1:{apps['good'].port}"):
        start(Studio(str(tmp_path / "no_model"), outputs=str(tmp_path / "out")), "127.0.0.1", apps["good"].port)
