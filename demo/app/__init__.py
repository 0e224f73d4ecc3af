"""The web editor: `python -m demo.app --config C --ckpt M [--data PATH]` serves a page in which to animate an image
and compose scenes, on the display-free editor core (demo/editor.py), with generations queued one at a time.

- demo/app/__main__.py: the command line (binding, limits, the optional dependencies' message)
- demo/app/server.py: the HTTP API and the page's routes (Starlette)
- demo/app/workspace.py: the model, sessions, uploads, controls files and generation requests, without HTTP
- demo/app/jobs.py: the generation queue (one at a time, positions, cancelling)
- demo/app/static/: the page (a canvas on the latent grid, plain JavaScript)

It needs the optional extra: `pip install -e ".[app]"` (Starlette and uvicorn).
"""
