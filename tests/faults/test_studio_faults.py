"""`omnideft studio` faced with the network: a login when asked for, a warning when it listens beyond this machine,
bounded uploads, its files under --outputs (not the system temp folder), no file outside them served, concurrent
requests. One app in this process (the tiny random model, a login, a 1 MB upload limit), reached over HTTP on
127.0.0.1 only, in a private temp folder."""

from __future__ import annotations

import base64
import os
import tempfile
import threading
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio_client import Client, handle_file

from omnideft.studio import app as studio_app
from omnideft.studio.access import LOGIN_ENV, exposure_warning
from omnideft.studio.session import Studio
from tests.helpers import assert_one_line_error, free_port, run_cli_here
from tests.studio_world import write_images

# gradio's own queue calls deprecated pandas options (not ours to fix)
pytestmark = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]
LOGIN = ("ann", "s3cret:with colon")  # a colon in the password: only the first one separates
LIMIT_MB = 1


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def generate_inputs(demo, values: dict) -> tuple[int, list]:
    """The Generate button's event: its index and its inputs as the page sends them (`values` by elem_id)."""
    index, fn = next((i, f) for i, f in demo.fns.items() if f.name == "on_generate")
    return index, [values.get(c.elem_id, c.value) for c in fn.inputs if not isinstance(c, gr.State)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The app on 127.0.0.1 with a login, in a private system temp folder (TMPDIR and tempfile's cached copy)."""
    root = tmp_path_factory.mktemp("studio_faults")
    tmp, outputs = root / "tmp", root / "outputs"
    tmp.mkdir()
    images = write_images(root / "images", {"query": (32, 32)})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", str(tmp))
        mp.setattr(tempfile, "tempdir", str(tmp))
        mp.delenv("GRADIO_TEMP_DIR", raising=False)  # the studio sets it below --outputs; restored afterwards
        studio = Studio("tiny", [], [], outputs=str(outputs))
        url = f"http://127.0.0.1:{free_port()}"
        demo = studio_app.start(studio, "127.0.0.1", int(url.rsplit(":", 1)[1]), [LOGIN], LIMIT_MB)
        try:
            yield {"url": url, "demo": demo, "outputs": outputs, "tmp": tmp, "images": images}
        finally:
            demo.close()


def logged_in(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60)
    assert client.post("/login", data={"username": LOGIN[0], "password": LOGIN[1]}).status_code == 200
    return client


def test_without_the_login_every_route_is_refused(world):
    url = world["url"]
    anyone = httpx.Client(base_url=url, timeout=60)
    for method, route in [("GET", "/config"), ("GET", "/gradio_api/info"), ("POST", "/gradio_api/upload"),
                          ("GET", f"/gradio_api/file={world['outputs']}/uploads")]:
        files = {"files": ("a.png", b"x")} if method == "POST" else None
        r = anyone.request(method, route, files=files)
        assert r.status_code == 401, (route, r.status_code, r.text[:200])
    assert anyone.post("/login", data={"username": LOGIN[0], "password": "wrong"}).status_code == 400
    assert logged_in(url).get("/config").status_code == 200


def test_an_upload_over_the_limit_is_refused_and_not_stored(world):
    client = logged_in(world["url"])
    before = listing(world["outputs"]) | {"tmp:" + p for p in listing(world["tmp"])}
    big = os.urandom(LIMIT_MB * 2**20 + 1)
    r = client.post("/gradio_api/upload", files={"files": ("big.png", big)})
    assert r.status_code == 413 and f"{LIMIT_MB * 2**20} bytes" in r.text
    # the same bytes as a base64 data URL in the Generate event's own payload (Gradio stores those unbounded)
    index, data = generate_inputs(world["demo"], {"prompt": "x", "query": {
        "url": "data:image/png;base64," + base64.b64encode(big).decode(), "meta": {"_type": "gradio.FileData"}}})
    r = client.post("/gradio_api/queue/join", json={"data": data, "fn_index": index, "session_hash": "s1"})
    assert r.status_code == 413 and f"{LIMIT_MB * 2**20} bytes" in r.text
    after = listing(world["outputs"]) | {"tmp:" + p for p in listing(world["tmp"])}
    assert after == before  # not even a partial file
    r = client.post("/gradio_api/upload", files={"files": ("small.png", big[:1000])})
    assert r.status_code == 200
    (stored,) = r.json()
    assert Path(stored).is_relative_to(world["outputs"] / "uploads") and Path(stored).read_bytes() == big[:1000]


def test_uploads_and_results_stay_under_outputs_also_with_two_requests_at_once(world):
    """Two presses of Generate at once (two clients): both finish, one after the other; the query upload, the
    results and Gradio's copies of them are under --outputs, and the system temp folder is left as it was."""
    tmp_before = listing(world["tmp"])
    _, args = generate_inputs(world["demo"], {"prompt": "a cat", "query": handle_file(str(world["images"]["query"])),
                                              "steps": 1})
    replies = []

    def press():
        client = Client(world["url"], auth=LOGIN, verbose=False, download_files=False)
        replies.append(client.predict(*args, api_name="/on_generate"))

    threads = [threading.Thread(target=press) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(replies) == 2
    messages = sorted(r[1] for r in replies)
    assert messages[0].startswith("Generation #1:") and messages[1].startswith("Generation #2:"), messages
    outputs = world["outputs"]
    assert (outputs / "studio-0001.png").is_file() and (outputs / "studio-0002.png").is_file()
    shown = [Path(r[0][0]["image"]["path"]) for r in replies]  # the page's copies of the results
    uploads = [p for p in (outputs / "uploads").rglob("query.png")]
    assert uploads and all(p.is_relative_to(outputs / "uploads") and p.is_file() for p in shown + uploads)
    assert listing(world["tmp"]) == tmp_before


def test_no_file_outside_the_outputs_is_served(world, tmp_path):
    client = logged_in(world["url"])
    outputs = world["outputs"]
    (outputs / "link.png").symlink_to("/etc/passwd")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not for the page")
    for route in ["/gradio_api/file=/etc/passwd", f"/gradio_api/file={outputs}/../../../../etc/passwd",
                  "/gradio_api/file=%2fetc%2fpasswd", f"/gradio_api/file={outputs}%2f..%2f..%2fsecret.png",
                  f"/gradio_api/file={secret}", f"/gradio_api/file={outputs}/link.png"]:
        r = client.get(route)
        assert r.status_code in (403, 404) and b"root:" not in r.content and b"not for" not in r.content, route
    (outputs / "served.png").write_bytes(b"an output")  # what lies under --outputs is served
    assert client.get(f"/gradio_api/file={outputs}/served.png").content == b"an output"


def test_listening_beyond_this_machine_is_warned_about(monkeypatch, tmp_path, capsys):
    for host in ("127.0.0.1", "localhost", "::1", "127.0.1.1"):
        assert exposure_warning(host, 7860, False) is None, host
    for host in ("0.0.0.0", "::", "192.168.1.20"):
        assert "with no login: anyone who can reach this machine" in exposure_warning(host, 7860, False)
        assert "behind a login; the connection is plain HTTP" in exposure_warning(host, 7860, True)

    class Listening:  # `serve` up to the point where it would block: nothing binds an outside address here
        def block_thread(self):
            pass

    started = []
    monkeypatch.setattr(studio_app, "start", lambda studio, host, port, logins, mb: started.append(logins)
                        or Listening())
    monkeypatch.delenv(LOGIN_ENV, raising=False)
    studio_app.serve(str(tmp_path / "no_model"), [], [], host="0.0.0.0", port=7861, outputs=str(tmp_path / "o"))
    err = capsys.readouterr().err
    assert "warning: listening on 0.0.0.0 (every network interface), port 7861, with no login" in err
    monkeypatch.setenv(LOGIN_ENV, "ann:pw")
    studio_app.serve(str(tmp_path / "no_model"), [], [], host="0.0.0.0", port=7861, outputs=str(tmp_path / "o"))
    captured = capsys.readouterr()
    assert "behind a login" in captured.err and "login required (1 user(s))" in captured.out
    assert started == [[], [("ann", "pw")]]


def test_a_bad_auth_file_is_one_line_that_does_not_repeat_the_password(tmp_path, monkeypatch):
    monkeypatch.delenv(LOGIN_ENV, raising=False)
    bad = tmp_path / "logins"
    bad.write_text("# users\nann:pw1\nbobhunter2\n")
    proc = run_cli_here("studio", "--model", str(tmp_path / "never_loaded"), "--auth-file", str(bad))
    assert_one_line_error(proc, f"--auth-file {bad} line 3: expected user:password")
    assert "hunter2" not in proc.stderr
    empty = tmp_path / "empty"
    empty.write_text("# nobody yet\n")
    assert_one_line_error(run_cli_here("studio", "--model", "tiny", "--auth-file", str(empty)), "no user:password")
    assert_one_line_error(run_cli_here("studio", "--model", "tiny", "--auth-file", str(tmp_path / "none")),
                          "cannot read it")
    proc = run_cli_here("studio", "--model", "tiny", "--max-upload-mb", "0")  # argparse's usage, then one line
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(
        "argument --max-upload-mb: '0' is 0; allowed: >= 1"), proc.stderr
