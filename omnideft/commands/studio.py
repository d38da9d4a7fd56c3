"""omnideft studio: the local web app for in-context generation (docs/studio.md)."""

from __future__ import annotations

from omnideft.commands.args import add_family_flag
from omnideft.errors import UserError
from omnideft.options import bounded
from omnideft.studio.access import DEFAULT_MAX_UPLOAD_MB, LOGIN_ENV


def add_parser(sub):
    s = sub.add_parser("studio", help="local web app for in-context generation (needs omnideft[studio])",
                       description="A Gradio app on HOST:PORT: examples, query, prompt, adapters with weights, "
                                   "camera and orbit, task presets from shards, a history with command lines "
                                   "(docs/studio.md).")
    s.add_argument("--model", required=True, help="base: hub id, diffusers folder, 'tiny' or 'small'")
    s.add_argument("--adapters", nargs="*", default=[], metavar="DIR_OR_RUNS",
                   help="adapter folders, run folders or folders of runs; every adapter below them is offered")
    s.add_argument("--examples", nargs="*", default=[], metavar="SHARDS",
                   help="held-out shard globs or directories: task presets (examples, query, prompt, target)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; "
                                                        "another address is warned about, see --auth-file)")
    s.add_argument("--port", type=bounded(int, "[1, 65535]"), default=7860, help="port (default 7860)")
    s.add_argument("--auth-file", metavar="FILE", help="ask for a login: one user:password a line (keep it chmod "
                                                       f"600); or set {LOGIN_ENV}=user:password")
    s.add_argument("--max-upload-mb", type=bounded(int, ">= 1"), default=DEFAULT_MAX_UPLOAD_MB, metavar="MB",
                   help=f"largest file the page accepts, in MB (default {DEFAULT_MAX_UPLOAD_MB}); bigger uploads are "
                        "refused before they are stored")
    s.add_argument("--outputs", metavar="DIR", help="folder for the generated images and the page's uploads "
                                                    "(OUTPUTS/uploads); default: a new temporary folder")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    s.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    add_family_flag(s)
    return s


def run(args) -> int:
    try:
        import gradio  # noqa: F401  (an optional extra)
    except ImportError:
        raise UserError("omnideft studio needs gradio: pip install 'omnideft[studio]'") from None
    from omnideft.studio.app import serve

    serve(model=args.model, adapter_roots=args.adapters, example_shards=args.examples, host=args.host,
          port=args.port, outputs=args.outputs, device=args.device, dtype=args.dtype, auth_file=args.auth_file,
          max_upload_mb=args.max_upload_mb, family=args.family)
    return 0
