"""The Gradio page: upload, mode, Restore -> input and result side by side, the PNG, time and checkpoint.

All work is `service.Restorer`; this module only lays it out. The Restore button is also the HTTP API
endpoint `/restore` (gradio_client: `Client(url).predict(handle_file(path), "auto", api_name="/restore")`),
returning (input and restored images, the restored PNG, the status text in Markdown).
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Any

from dwgn.app.service import MODES, Restoration, Restorer, UploadError

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local page: no usage reports
import gradio as gr  # noqa: E402

TITLE = "DwGN: remove rain, snow, raindrops and haze from a photo"


def status_text(result: Restoration, checkpoint: str) -> str:
    h, w = result.output.shape[:2]
    lines = [f"**Restored** {w}×{h} in **{result.seconds:.2f} s** ({result.mode}) with `{checkpoint}`."]
    lines += [f"- {note}" for note in result.notes]
    return "\n".join(lines)


def respond(restorer: Restorer, path: str | None, mode: str) -> tuple[Any, str | None, str]:
    """The button's handler: (slider value or the two panes' values, PNG path, status). Never raises: a
    bad upload is a message, and so is a bug (its traceback goes to the server's console)."""
    try:
        result = restorer(path, mode)
    except UploadError as err:
        return None, None, f"**Cannot restore this upload:** {err}"
    except MemoryError:
        return None, None, "**Out of memory** restoring this photo: pick 'tiled', or a smaller photo."
    except Exception as err:  # a bug: keep serving, say so on the page
        traceback.print_exc(file=sys.stderr)
        return None, None, f"**Restore failed** (a bug; the traceback is in the server's console): {err}"
    return (result.input, result.output), str(result.png), status_text(result, restorer.checkpoint)


def build_page(restorer: Restorer) -> gr.Blocks:
    slider = hasattr(gr, "ImageSlider")  # Gradio 5+; else two panes
    with gr.Blocks(title="DwGN") as page:
        gr.Markdown(f"## {TITLE}\nCheckpoint: `{restorer.checkpoint}` · photos up to "
                    f"{restorer.max_pixels / 1e6:.0f} megapixels · runs on this machine only")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Photo", type="filepath", file_count="single")
                mode = gr.Radio(list(MODES), value="auto", label="Mode",
                                info="auto tiles above one megapixel; 'tiled' for large photos")
                button = gr.Button("Restore", variant="primary")
                status = gr.Markdown(elem_id="status")
                download = gr.File(label="Restored photo (PNG)")
            with gr.Column(scale=2):
                if slider:
                    panes = [gr.ImageSlider(label="input | restored", type="numpy", format="png", elem_id="compare")]
                else:
                    panes = [gr.Image(label="input", format="png"), gr.Image(label="restored", format="png")]

        def handler(path: str | None, chosen: str):
            images, png, text = respond(restorer, path, chosen)
            if slider:
                return images, png, text
            return *(images if images is not None else (None, None)), png, text

        button.click(handler, [upload, mode], [*panes, download, status], api_name="restore")
    return page


__all__ = ["build_page", "respond", "status_text"]
