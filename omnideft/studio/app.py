"""The studio's page (Gradio Blocks) and `serve`, the entry point of `omnideft studio`.

Widgets only hold values; session.Studio does the work. Every handler turns an error into one line in the page's
message area (session.describe_error), so bad input never shows a traceback and the app keeps serving.
"""

from __future__ import annotations

import os
import random
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local app: nothing is sent out

import gradio as gr  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402  (Gradio's web framework)

from omnideft.errors import UserError  # noqa: E402
from omnideft.studio.access import (  # noqa: E402
    DEFAULT_MAX_UPLOAD_MB,
    BodyLimit,
    auth_file_warning,
    exposure_warning,
    read_logins,
    use_upload_folder,
)
from omnideft.studio.history import history_markdown  # noqa: E402
from omnideft.studio.paths import shown_path  # noqa: E402
from omnideft.studio.session import Request, Studio, describe_error  # noqa: E402

MAX_EXAMPLES = 8  # example rows on the page (OmniGen's context grows by two images per row)
MAX_SEED = 2**31 - 1
# System fonts: the page must not wait for a font server on an offline machine.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "Consolas", "monospace"])
CSS = """
#message .error, .studio-problem { color: #b42318; font-weight: 600; }
"""


def tag(k: int) -> str:
    return f"<img><|image_{k}|></img>"


def with_tag(prompt: str, k: int) -> str:
    return f"{prompt.rstrip()} {tag(k)}".strip()


def with_missing_tags(prompt: str, n_images: int) -> str:
    """Append the tags of images the prompt does not mention yet (what compose_in_context would add anyway)."""
    for k in range(1, n_images + 1):
        if f"<|image_{k}|>" not in prompt:
            prompt = with_tag(prompt, k)
    return prompt


def gallery_paths(value) -> list[str]:
    """A Gallery's value (list of (path, caption) or paths) -> paths."""
    return [item[0] if isinstance(item, (list, tuple)) else item for item in (value or [])]


def error_line(text: str) -> str:
    return f'<p class="error">Error: {gr_escape(text)}</p>'


def gr_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def status_markdown(studio: Studio) -> str:
    lines = []
    if studio.generator is not None:
        g = studio.generator
        dtype = str(g.dtype).replace("torch.", "")
        lines.append(f"**Model** `{shown_path(studio.model_name)}` on {g.device} ({dtype}), "
                     f"{g.family.title}, base fingerprint `{g.fingerprint}`"
                     + (f", outputs up to {g.max_side()} px a side." if g.max_side() else "."))
    usable = sum(a.usable for a in studio.adapters)
    lines.append(f"**Adapters** {len(studio.adapters)} found, {usable} usable with this base. "
                 f"**Presets** {len(studio.catalog.tasks) if studio.catalog else 0} task(s). "
                 f"**Outputs** `{shown_path(studio.outputs)}`")
    for m in studio.messages:
        lines.append(f'<p class="studio-problem">⚠ {gr_escape(m)}</p>')
    return "\n\n".join(lines)


def build_app(studio: Studio) -> gr.Blocks:
    generator = studio.generator
    top = (generator.max_side() if generator is not None else None) or 2048
    # the page starts from the model's own settings (a 64 px model is offered 64 px and its steps)
    defaults = generator.defaults if generator is not None else None
    default_side = min(defaults.size if defaults else 1024, top)
    start_steps = defaults.steps if defaults else 50
    start_guidance = defaults.guidance if defaults else 2.5
    start_image_guidance = defaults.image_guidance if defaults else 1.6
    start_negative = (defaults.negative_prompt if defaults else None) or ""
    with gr.Blocks(title="omnideft studio", analytics_enabled=False) as demo:
        gr.Markdown("# omnideft studio")
        gr.Markdown(status_markdown(studio), elem_id="status")
        with gr.Row():
            with gr.Column(scale=3):
                # ---- task presets
                task = preset_load = preset_note = None
                if studio.catalog is not None and studio.catalog.tasks:
                    with gr.Row():
                        task = gr.Dropdown(studio.catalog.tasks, value=studio.catalog.tasks[0], scale=3,
                                           label="Task preset: a held-out sample of", elem_id="preset-task")
                        preset_load = gr.Button("Load preset", elem_id="preset-load", scale=1)
                    preset_note = gr.Markdown(elem_id="preset-note")
                # ---- in-context examples
                gr.Markdown("### In-context examples (condition → result)")
                rows, conds, results, removes = [], [], [], []
                for i in range(MAX_EXAMPLES):
                    with gr.Row(visible=False) as row:
                        conds.append(gr.Image(type="filepath", image_mode=None, format="png", height=150,
                                              sources=["upload", "clipboard"], label=f"Example {i + 1}: condition",
                                              elem_id=f"example-{i + 1}-in"))
                        results.append(gr.Image(type="filepath", image_mode=None, format="png", height=150,
                                                sources=["upload", "clipboard"], label=f"Example {i + 1}: result",
                                                elem_id=f"example-{i + 1}-out"))
                        removes.append(gr.Button("Remove", size="sm", scale=0, min_width=90,
                                                 elem_id=f"example-{i + 1}-remove"))
                    rows.append(row)
                shown = gr.State(0)
                add_example = gr.Button("+ Add example pair", size="sm", elem_id="example-add")
                # ---- query and prompt
                gr.Markdown("### Query")
                with gr.Row():
                    query = gr.Image(type="filepath", image_mode=None, format="png", height=200,
                                     sources=["upload", "clipboard"], elem_id="query",
                                     label="Query image = <|image_1|> (click it to insert its tag)")
                    inputs = gr.Gallery(type="filepath", interactive=True, columns=4, height=200, elem_id="inputs",
                                        file_types=["image"],
                                        label="More input images = <|image_2|>, … (click one to insert its tag)")
                prompt = gr.Textbox(label="Prompt", lines=3, elem_id="prompt",
                                    placeholder="e.g. Draw the photo for these edges <img><|image_1|></img>")
                negative = gr.Textbox(start_negative, label="Negative prompt", lines=2, elem_id="negative")
                # ---- adapters
                uses, weights = [], []
                with gr.Accordion("Adapters", open=True):
                    if not studio.adapters:
                        gr.Markdown("No adapters: start the studio with `--adapters DIR` (adapter folders, run "
                                    "folders or a folder of runs).")
                    for i, entry in enumerate(studio.adapters):
                        with gr.Row(equal_height=True):
                            uses.append(gr.Checkbox(False, label=entry.label, interactive=entry.usable, scale=3,
                                                    min_width=260, elem_id=f"adapter-{i}-use"))
                            weights.append(gr.Slider(-2.0, 2.0, 1.0, step=0.05, label="weight", scale=2,
                                                     interactive=entry.usable, elem_id=f"adapter-{i}-weight"))
                        info = gr_escape(entry.summary())
                        if entry.problem:
                            info += f'<p class="studio-problem">Cannot be used: {gr_escape(entry.problem)}</p>'
                        elif entry.note:
                            info += f"<br><em>{gr_escape(entry.note)}</em>"
                        gr.Markdown(info, elem_id=f"adapter-{i}-info")
                # ---- camera
                with gr.Accordion("Camera", open=bool(studio.camera_adapters)):
                    gr.Markdown("With a camera adapter selected (it goes first), the target camera conditions "
                                "the image; without one it is written into the prompt as text. Numbers: "
                                "f, cx, cy, k, qw, qx, qy, qz, tx, ty, tz (docs/camera.md).")
                    views = list(studio.views)
                    with gr.Row():
                        camera = gr.Textbox(label="Target camera (11 numbers, or empty)", scale=3, elem_id="camera")
                        view = gr.Dropdown(views, value=None, label="…or a view of the samples", scale=2,
                                           elem_id="camera-view")
                    with gr.Row():
                        orbit_to = gr.Textbox(label="Orbit to camera (11 numbers)", scale=3, elem_id="orbit-to")
                        view_to = gr.Dropdown(views, value=None, label="…or a view", scale=2, elem_id="orbit-view")
                    with gr.Row():
                        frames = gr.Slider(2, 48, 8, step=1, label="Orbit frames", elem_id="orbit-frames")
                        fps = gr.Slider(1, 30, 8, step=1, label="Frames per second", elem_id="orbit-fps")
                        orbit = gr.Button("Render orbit", elem_id="orbit")
                # ---- sampling settings
                with gr.Accordion("Settings", open=True):
                    with gr.Row():
                        guidance = gr.Slider(1.0, max(5.0, start_guidance), start_guidance, step=0.1,
                                             label="Text guidance", elem_id="guidance")
                        image_guidance = gr.Slider(1.0, max(2.0, start_image_guidance), start_image_guidance, step=0.05,
                                                   label="Image guidance",
                                                   elem_id="image-guidance")
                        steps = gr.Slider(1, 100, start_steps, step=1, label="Steps", elem_id="steps")
                    with gr.Row():
                        seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", elem_id="seed")
                        randomize = gr.Checkbox(False, label="Randomise seed", elem_id="randomize")
                        n_images = gr.Slider(1, 8, 1, step=1, label="Number of images", elem_id="n-images")
                    with gr.Row():
                        same_size = gr.Checkbox(True, label="Output size = query image", elem_id="same-size")
                        max_input = gr.Slider(16, 2048, 1024, step=16, label="Max input image size",
                                              elem_id="max-input")
                    with gr.Row():
                        height = gr.Slider(16, top, default_side, step=16, label="Height", elem_id="height")
                        width = gr.Slider(16, top, default_side, step=16, label="Width", elem_id="width")
                generate = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                message = gr.Markdown(elem_id="message")
                gallery = gr.Gallery(label="Result", format="png", columns=2, interactive=False, elem_id="result",
                                     buttons=["download", "fullscreen"])
                target = gr.Image(label="True target of the preset", visible=False, interactive=False,
                                  elem_id="target", buttons=["download"])
                with gr.Accordion("History of this run", open=True):
                    history = gr.Markdown(history_markdown([]), elem_id="history")
                    pick = gr.Dropdown([], label="Generation", elem_id="history-pick")
                    command = gr.Textbox(label="Equivalent omnideft generate command line(s)", lines=4,
                                         buttons=["copy"], interactive=False, elem_id="command")

        # ---- handlers
        def request(data) -> Request:
            return Request(
                prompt=data[prompt] or "", query=data[query], inputs=gallery_paths(data[inputs]),
                examples=[(data[conds[i]], data[results[i]]) for i in range(data[shown])],
                adapters=[(i, data[weights[i]]) for i in range(len(uses)) if data[uses[i]]],
                negative_prompt=None if data[negative] == start_negative else data[negative],
                seed=int(data[seed] or 0), n=int(data[n_images]), same_as_query=bool(data[same_size]),
                height=int(data[height]), width=int(data[width]), steps=int(data[steps]),
                guidance=float(data[guidance]), image_guidance=float(data[image_guidance]),
                max_input_image_size=int(data[max_input]), camera=data[camera] or "")

        form = {prompt, query, inputs, shown, *conds, *results, *uses, *weights, negative, seed, randomize,
                n_images, same_size, height, width, steps, guidance, image_guidance, max_input, camera}
        shown_outputs = [gallery, message, seed, history, pick, command]

        def finished(entry, note: str = ""):
            lines = entry.command_lines()
            labels = [f"#{g.number} {g.kind}, seed {g.settings.seed}" for g in studio.history]
            gallery_items = [(str(p), f"{p.name}") for p in entry.outputs]
            s = entry.settings
            used = ", ".join(f"{studio.adapter_label(p)} × {w:g}" for p, w in s.adapters) or "no adapter"
            text = (f"Generation #{entry.number}: {len(entry.outputs)} file(s), {s.width}×{s.height}, seed "
                    f"{s.seed}, {used}, {entry.seconds:.1f} s. {note}")
            return {gallery: gallery_items, message: text.strip(), seed: s.seed,
                    history: history_markdown(studio.history, studio.adapter_label),
                    pick: gr.Dropdown(choices=labels, value=labels[-1]), command: "\n".join(lines)}

        def failed(exc: BaseException):
            return {message: error_line(describe_error(exc))}

        def camera_note(data) -> str:
            if (data[camera] or "").strip() and not any(
                    data[uses[i]] and studio.adapters[i].camera for i in range(len(uses))):
                return "No camera adapter selected: the camera was written into the prompt as text."
            return ""

        def run(action, data, progress, desc: str, *extra):
            """Generate or orbit: a drawn seed goes back into its box; the progress bar follows the steps."""
            try:
                if data[randomize]:
                    data[seed] = random.randint(0, MAX_SEED)
                progress((0, 1), desc=desc)
                entry = action(request(data), *extra, on_step=lambda done, total: progress((done, total), desc=desc))
                return finished(entry, camera_note(data))
            except Exception as exc:
                return failed(exc)

        def on_generate(data, progress=gr.Progress()):
            return run(studio.generate, data, progress, "sampling")

        def on_orbit(data, progress=gr.Progress()):
            if not (data[camera] or "").strip() or not (data[orbit_to] or "").strip():
                return failed(UserError("an orbit needs a target camera and an orbit-to camera"))
            return run(studio.orbit, data, progress, "orbit", data[camera], data[orbit_to], data[frames], data[fps])

        def cleared():
            return ""

        # the message is cleared first, so an old report is never mistaken for this one's
        generate.click(cleared, outputs=message, queue=False).then(on_generate, inputs=form, outputs=shown_outputs)
        orbit.click(cleared, outputs=message, queue=False).then(on_orbit, inputs=form | {orbit_to, frames, fps},
                                                                outputs=shown_outputs)

        def on_pick(label):
            for g in studio.history:
                if label and label.startswith(f"#{g.number} "):
                    return "\n".join(g.command_lines())
            return ""

        pick.input(on_pick, inputs=pick, outputs=command)

        # example rows: add, remove (the rows below move up)
        def on_add(count):
            count = min(count + 1, MAX_EXAMPLES)
            return [count] + [gr.Row(visible=i < count) for i in range(MAX_EXAMPLES)]

        add_example.click(on_add, inputs=shown, outputs=[shown, *rows])

        def remove_row(index):
            def on_remove(count, *values):
                ins, outs = list(values[:MAX_EXAMPLES]), list(values[MAX_EXAMPLES:])
                del ins[index], outs[index]
                ins.append(None)
                outs.append(None)
                count = max(count - 1, 0)
                return [count, *[gr.Row(visible=i < count) for i in range(MAX_EXAMPLES)], *ins, *outs]
            return on_remove

        for i, button in enumerate(removes):
            button.click(remove_row(i), inputs=[shown, *conds, *results], outputs=[shown, *rows, *conds, *results])

        # tags: uploads add the missing ones, clicking an image inserts its own
        def on_images(text, q, more):
            return with_missing_tags(text or "", (1 if q else 0) + len(gallery_paths(more)))

        query.upload(on_images, inputs=[prompt, query, inputs], outputs=prompt)
        inputs.upload(on_images, inputs=[prompt, query, inputs], outputs=prompt)
        query.select(lambda text: with_tag(text or "", 1), inputs=prompt, outputs=prompt)

        def on_input_select(text, q, evt: gr.SelectData):
            return with_tag(text or "", evt.index + (2 if q else 1))

        inputs.select(on_input_select, inputs=[prompt, query], outputs=prompt)

        # camera views
        view.input(lambda name: studio.views.get(name, ""), inputs=view, outputs=camera)
        view_to.input(lambda name: studio.views.get(name, ""), inputs=view_to, outputs=orbit_to)

        # presets
        if preset_load is not None:
            def on_preset(name):
                try:
                    p = studio.preset(name)
                except Exception as exc:
                    return failed(exc)
                count = min(len(p.examples), MAX_EXAMPLES)
                ex = p.examples[:count]
                update = {shown: count, prompt: p.prompt, query: str(p.images[0]) if p.images else None,
                          inputs: [str(x) for x in p.images[1:]], camera: p.camera or "",
                          target: gr.Image(value=str(p.target), visible=True),
                          preset_note: f"Preset **{p.task}**, sample `{p.key}`: {p.note}.", message: ""}
                for i in range(MAX_EXAMPLES):
                    update[rows[i]] = gr.Row(visible=i < count)
                    update[conds[i]] = str(ex[i][0]) if i < count else None
                    update[results[i]] = str(ex[i][1]) if i < count else None
                return update

            preset_load.click(on_preset, inputs=task, outputs=[shown, prompt, query, inputs, camera, target,
                                                               preset_note, message, *rows, *conds, *results])
    return demo


def start(studio: Studio, host: str = "127.0.0.1", port: int = 7860, logins: list[tuple[str, str]] = (),
          max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB) -> gr.Blocks:
    """Build the page and listen on host:port in the background; returns the Blocks (`.close()` stops it).
    With `logins` every route asks for one of them (Gradio's login page); uploads over `max_upload_mb` are refused
    (HTTP 413) before they are stored, and uploads land below studio.outputs (access.use_upload_folder)."""
    use_upload_folder(studio.outputs)  # before the page is built: its components read the folder then
    demo = build_app(studio)
    try:
        demo.queue(default_concurrency_limit=1).launch(
            server_name=host, server_port=port, prevent_thread_lock=True, show_error=False, ssr_mode=False,
            quiet=True, theme=THEME, css=CSS, allowed_paths=[str(studio.outputs)], footer_links=[],
            auth=list(logins) or None, max_file_size=f"{int(max_upload_mb)}mb",
            app_kwargs={"middleware": [Middleware(BodyLimit, limit=int(max_upload_mb) * 2**20)]})
    except OSError as exc:
        raise UserError(f"studio cannot listen on {host}:{port}: {str(exc).splitlines()[0]}") from None
    return demo


def serve(model: str, adapter_roots: list[str], example_shards: list[str], host: str = "127.0.0.1",
          port: int = 7860, outputs: str | None = None, device: str = "auto", dtype: str = "auto",
          auth_file: str | None = None, max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB, family: str = "auto") -> None:
    """`omnideft studio`: load, listen on host:port until interrupted."""
    logins = read_logins(auth_file)  # a bad login file stops before the model loads
    warnings = [w for w in (auth_file_warning(auth_file), exposure_warning(host, port, bool(logins))) if w]
    studio = Studio(model, adapter_roots, example_shards, outputs=outputs, device=device, dtype=dtype,
                    family=family)
    demo = start(studio, host, port, logins, max_upload_mb)
    for m in warnings + studio.messages:
        print(f"omnideft studio: warning: {m}", file=sys.stderr, flush=True)
    login = f", login required ({len(logins)} user(s))" if logins else ""
    print(f"omnideft studio: http://{host}:{port}{login} (Ctrl+C stops it)", flush=True)
    demo.block_thread()
