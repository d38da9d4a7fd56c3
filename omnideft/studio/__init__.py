"""`omnideft studio`: a local Gradio web app for in-context generation (the optional extra `omnideft[studio]`).

Rooms: `adapters.py` (adapter discovery and base checks), `catalog.py` (held-out shards: samples by task, camera
views), `presets.py` (a sample as examples, query, prompt and target), `history.py` (generations and their
`omnideft generate` command lines), `paths.py` (paths as shown and reported), `access.py` (logins, the warning
beyond the loopback, the upload bound, the upload folder under --outputs), `session.py` (the app's state and
actions, free of Gradio), `app.py` (the page and `serve`).
Generation goes through omnideft.generate.Generator, as the CLI's does, so both give the same pixels.
"""
