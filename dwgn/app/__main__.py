"""`python -m dwgn.app [--checkpoint PATH] [--port 7860] [--max-megapixels 16]`: the page on 127.0.0.1 only."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from dwgn.errors import ArgumentParser, UserError, run_main
from dwgn.app.service import DEFAULT_MAX_MEGAPIXELS, Restorer
from dwgn.evaluation.evaluate import DEFAULT_CHECKPOINT, load_checkpoint_model

PROG = "python -m dwgn.app"
HOST = "127.0.0.1"  # loopback only: the page is for this machine


class AppError(UserError):
    """A user's mistake starting the page (missing extra, checkpoint, busy port)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0].strip("`"))
    p.add_argument("--checkpoint", default=None, help=f"a .pt or .safetensors checkpoint (default: the demo, "
                   f"checkpoints/{DEFAULT_CHECKPOINT.name})")
    p.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default 7860)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    p.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS,
                   help=f"larger uploads are refused with a message (default {DEFAULT_MAX_MEGAPIXELS:g})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("gradio") is None:
        raise AppError("the web page needs Gradio, an optional extra: pip install -r requirements-app.txt")
    path = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
    model = load_checkpoint_model(path, args.device)
    from dwgn.app.page import build_page

    page = build_page(Restorer(model, str(args.checkpoint or f"checkpoints/{path.name}"), args.max_megapixels))
    print(f"{PROG}: serving {path.name} on http://{HOST}:{args.port} (Ctrl-C stops it)")
    try:
        page.queue().launch(server_name=HOST, server_port=args.port, share=False, inbrowser=False,
                            max_file_size="200mb", show_error=True, quiet=True)
    except OSError as err:  # port in use
        raise AppError(f"cannot listen on {HOST}:{args.port} ({err}): pick another --port") from None
    return 0


def run(argv: list[str] | None = None) -> None:
    """Exit with main's status; a mistake is one `error:` line and exit 2 (dwgn.errors.run_main)."""
    run_main(main, PROG, argv)


if __name__ == "__main__":
    run()
