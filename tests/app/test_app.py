"""The web page (`python -m dwgn.app`): its restore function without Gradio, and its HTTP API on 127.0.0.1."""
from __future__ import annotations

import socket

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from dwgn.app import service
from dwgn.app.service import Restorer, UploadError
from dwgn.evaluation.restore import restore
from dwgn.models.network import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("tiny").eval()


@pytest.fixture
def restorer(model, tmp_path):
    return Restorer(model, "tiny-test.pt", max_megapixels=1.0, out_dir=tmp_path / "out")


@pytest.fixture
def photo(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    return tmp_path / "photo.png", rgb


def test_restores_like_dwgn_restore_and_writes_the_png(restorer, model, photo):
    path, rgb = photo
    result = restorer(path, "auto")
    assert np.array_equal(result.input, rgb) and np.array_equal(result.output, restore(model, rgb))
    assert np.array_equal(np.asarray(Image.open(result.png)), result.output) and result.png.name == "photo-restored.png"
    assert result.mode == "whole image" and result.notes == [] and result.seconds > 0


def test_the_page_runs_the_network_once(restorer, model, photo):
    path, rgb = photo
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        once = model(x).clamp(0, 1)
        twice = model(once).clamp(0, 1)
    by_hand = [np.round(v[0].permute(1, 2, 0).numpy() * 255) for v in (once, twice)]
    assert np.abs(by_hand[0] - by_hand[1]).max() > 1  # a second run would show
    result = restorer(path, "auto")
    assert np.abs(result.output.astype(int) - by_hand[0]).max() <= 1 and result.mode == "whole image"


def test_tiled_mode_tiles(restorer, model, tmp_path, monkeypatch):
    monkeypatch.setitem(service.MODES, "tiled", 128)
    rgb = np.random.default_rng(2).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "wide.png")
    result = restorer(tmp_path / "wide.png", "tiled")
    assert result.mode == "tiled, 128 px tiles" and np.array_equal(result.output, restore(model, rgb, tile=128))
    assert not np.array_equal(result.output, restore(model, rgb, tile=0))  # tiling did happen


def test_sixteen_bit_gray_is_scaled_restored_and_returned_gray(restorer, model, tmp_path):
    gray16 = np.random.default_rng(1).integers(0, 65536, (50, 70), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    result = restorer(tmp_path / "g16.png", "auto")
    gray8 = np.round(gray16 / 257).astype(np.uint8)
    assert result.output.shape == (50, 70) and np.array_equal(result.input, gray8)
    assert np.array_equal(result.output, restore(model, gray8))
    assert any("16-bit" in n for n in result.notes) and any("grayscale" in n for n in result.notes)


def test_sixteen_bit_rgb_is_reported(restorer, tmp_path):
    cv2.imwrite(str(tmp_path / "c16.png"), np.full((40, 40, 3), 40000, np.uint16))
    result = restorer(tmp_path / "c16.png", "auto")
    assert result.output.shape == (40, 40, 3) and [n for n in result.notes if "16-bit" in n]
    assert np.all(result.input == round(40000 / 257))


def test_a_transparent_upload_is_restored_in_colour_and_keeps_its_alpha(restorer, model, tmp_path):
    """One policy with test.py --input and dwgn.restore: the RGB is restored, the alpha passed through unchanged."""
    rng = np.random.default_rng(3)
    rgba = np.concatenate([rng.integers(0, 256, (30, 40, 3), dtype=np.uint8),
                           rng.integers(0, 256, (30, 40, 1), dtype=np.uint8)], axis=2)  # alpha 0..255, some clear
    rgba[:5, :, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "glass.png")
    result = restorer(tmp_path / "glass.png", "auto")
    assert np.array_equal(result.input, rgba) and result.output.shape == (30, 40, 4)
    assert np.array_equal(result.output[..., 3], rgba[..., 3])  # the alpha unchanged
    assert np.array_equal(result.output[..., :3], restore(model, rgba[..., :3]))  # the colours restored as RGB
    assert np.array_equal(np.asarray(Image.open(result.png)), result.output)  # the download keeps the alpha
    assert any("alpha" in note for note in result.notes)


@pytest.mark.parametrize("content, message", [
    (b"hello, not an image", "not.png is not an image this page can read"),
    ("huge", r"is 1200x900 \(1.1 megapixels\), above this page's limit of 1"),
])
def test_bad_uploads_are_messages(restorer, tmp_path, content, message):
    path = tmp_path / "not.png"
    if content == "huge":
        Image.new("RGB", (1200, 900)).save(path)
    else:
        path.write_bytes(content)
    with pytest.raises(UploadError, match=message):
        restorer(path, "auto")


def test_whole_image_mode_refuses_large_photos_and_no_upload_is_a_message(restorer, photo, monkeypatch):
    monkeypatch.setattr(service, "WHOLE_IMAGE_MAX_PIXELS", 1000)
    with pytest.raises(UploadError, match="too large to restore as a whole image.*pick 'tiled'"):
        restorer(photo[0], "whole image")
    with pytest.raises(UploadError, match="no photo"):
        restorer(None, "auto")


# ------------------------------------------------------------------------------------- the page (Gradio)
def test_page_handler_turns_every_failure_into_a_message(restorer, photo, tmp_path):
    pytest.importorskip("gradio", reason="the page is an extra: pip install -r requirements-app.txt")
    from dwgn.app.page import respond

    images, png, text = respond(restorer, str(photo[0]), "auto")
    assert np.array_equal(images[0], photo[1]) and png.endswith("photo-restored.png")
    assert "tiny-test.pt" in text and " s** (whole image)" in text
    (tmp_path / "bad.jpg").write_text("no")
    assert respond(restorer, str(tmp_path / "bad.jpg"), "auto")[2].startswith("**Cannot restore this upload:**")

    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            raise RuntimeError("boom")

    restorer.model = Broken()
    assert respond(restorer, str(photo[0]), "auto") == (None, None, "**Restore failed** (a bug; the traceback is "
                                                        "in the server's console): boom")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http_api_restores_and_survives_bad_uploads(restorer, photo, tmp_path):
    pytest.importorskip("gradio", reason="the page is an extra: pip install -r requirements-app.txt")
    from gradio_client import Client, handle_file

    from dwgn.app.page import build_page

    page = build_page(restorer)
    port = _free_port()
    page.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", download_files=str(tmp_path / "downloads"), verbose=False)
        (bad := tmp_path / "bad.png").write_text("not an image")
        (slider, png, text) = client.submit(handle_file(str(photo[0])), "auto", api_name="/restore").result(timeout=120)
        expected = restorer(photo[0], "auto").output
        assert np.array_equal(np.asarray(Image.open(png)), expected)
        assert np.array_equal(np.asarray(Image.open(slider[0]).convert("RGB")), photo[1])
        assert np.array_equal(np.asarray(Image.open(slider[1]).convert("RGB")), expected)
        assert "Restored** 90×60" in text and "tiny-test.pt" in text
        assert client.submit(handle_file(str(bad)), "auto", api_name="/restore").result(timeout=120) == \
            (None, None, "**Cannot restore this upload:** bad.png is not an image this page can read "
                         "(PNG, JPEG, WebP, TIFF, BMP ...)")
        again = client.submit(handle_file(str(photo[0])), "tiled", api_name="/restore").result(timeout=120)
        assert np.array_equal(np.asarray(Image.open(again[1])), expected)  # still serving
    finally:
        page.close()


def test_app_command_user_errors_are_one_line(capsys, tmp_path):
    pytest.importorskip("gradio", reason="the page is an extra: pip install -r requirements-app.txt")
    from dwgn.app.__main__ import run

    with pytest.raises(SystemExit) as exit_info:
        run(["--checkpoint", str(tmp_path / "missing.pt"), "--port", str(_free_port())])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("python -m dwgn.app: error: checkpoint ") and "missing.pt not found" in err


def test_exif_orientation_is_applied_like_test_py(restorer, model, tmp_path):
    """A phone photo stored sideways with EXIF orientation 6 is restored upright, as `test.py --input` does."""
    upright = np.random.default_rng(3).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # (80, 48): what a camera rotated by 90 degrees stores
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=exif)
    result = restorer(tmp_path / "phone.png", "auto")
    assert result.input.shape == (48, 80, 3)
    np.testing.assert_array_equal(result.input, upright)
    np.testing.assert_array_equal(result.output, restore(model, upright))
    assert any("EXIF orientation" in n for n in result.notes)
