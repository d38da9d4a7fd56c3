"""The CLI's verbs, one module each. A verb's module has `add_parser(subparsers)`, which adds the verb with its flags
and help and returns its parser, and `run(args) -> int`, the exit code; cli.py lists the modules (in the order
`omnideft --help` shows them), so a new verb is one module here plus one line there.

Each `run` imports the room that does the work inside the function: those rooms load torch, diffusers and PEFT
(seconds), which `omnideft --help`, `check-shards` and argument errors should not wait for. What several verbs share
is in args.py (bounded number types), metric_flags.py (eval and bench) and family_options.py (flags that only one
model family takes).
"""
