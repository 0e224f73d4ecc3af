"""python -m demo.app --config C --ckpt M [--data PATH] [--host 127.0.0.1 --port 7860 --device cuda]

Serves the web editor on this machine only (127.0.0.1) unless --host or --share says otherwise. On a remote GPU
machine, forward the port through SSH instead: `ssh -L 7860:127.0.0.1:7860 gpu-host`, then open
http://127.0.0.1:7860 here. Exit status: 0 stopped, 1 missing dependencies or a port in use, 2 bad command line.
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys

log = logging.getLogger("demo.app")

MISSING = "the web editor needs Starlette and uvicorn, which are an optional extra: pip install -e \".[app]\""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m demo.app", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="the model's config (YAML); the page can load one later")
    parser.add_argument("--ckpt", help="CAGE checkpoint (original or ours)")
    parser.add_argument("--data", help="HDF5 split folder or shard whose clips can be opened by index "
                                       "(default: data.data_root/test of the config, when it exists)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true",
                        help="bind every interface (0.0.0.0): anyone who reaches this machine can use the editor")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="as generate.py's --precision (the page's command line repeats it)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0, help="largest image upload (default 20 MiB)")
    parser.add_argument("--fps", type=float, default=8.0, help="frame rate of the videos written")
    parser.add_argument("--trust-checkpoint", action="store_true", help="allow checkpoints that need full unpickling")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    return parser


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.ckpt and not args.config:
        parser.error("--ckpt needs --config")
    if not 0 < args.port < 65536:
        parser.error(f"--port must be 1..65535, got {args.port}")
    if not args.max_upload_mb > 0 or not args.fps > 0:
        parser.error("--max-upload-mb and --fps must be positive")
    try:
        import uvicorn

        from demo.app.server import create_app
    except ImportError as error:
        print(f"error: {MISSING} ({error})", file=sys.stderr)
        return 1
    from demo.app.workspace import Limits, Workspace

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    host = "0.0.0.0" if args.share else args.host
    if not is_loopback(host):
        log.warning("binding %s: the editor is open to everyone who reaches this machine on port %d (loading models "
                    "and files named in the page is off); prefer an SSH tunnel to 127.0.0.1", host, args.port)
    limits = Limits(upload_bytes=int(args.max_upload_mb * 2 ** 20))
    workspace = Workspace(args.config, args.ckpt, args.data, device=args.device, precision=args.precision,
                          overrides=args.overrides, limits=limits, trust=args.trust_checkpoint, fps=args.fps,
                          public=not is_loopback(host))
    if workspace.model_error:
        log.error("%s (the page shows it; load another model there)", workspace.model_error)
    # uvicorn stops gracefully on SIGTERM, then raises it again for the handler it found: make that handler exit
    # through `finally`, so the temporary folder goes with the server.
    previous = signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(0))
    try:
        print(f"web editor on http://{'127.0.0.1' if host == '0.0.0.0' else host}:{args.port} (Ctrl-C stops it)",
              flush=True)
        uvicorn.run(create_app(workspace), host=host, port=args.port, log_level="warning")
    except OSError as error:
        print(f"error: cannot serve on {host}:{args.port} ({error})", file=sys.stderr)
        return 1
    finally:
        workspace.close()
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
