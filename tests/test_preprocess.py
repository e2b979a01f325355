"""dlcore.views.draw: drawings and uploads turned into MNIST images, and refusals of bad input."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFile

from dlcore.engine.config import PRESETS
from dlcore.engine.data import load_dataset
from dlcore.engine.train import train
from dlcore.runs.run_view import view_from_result
from dlcore.views.draw import (
    ImageError,
    accepts_shape,
    canvas_to_mnist,
    decode_image,
    image_to_png,
    predict,
    prepare_upload,
    to_mnist,
)


def ink_box(image: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    w = image.astype(np.float64)
    return (float((w.sum(1) * np.arange(w.shape[0])).sum() / w.sum()),
            float((w.sum(0) * np.arange(w.shape[1])).sum() / w.sum()))


def stroke_image(shape=(200, 300), kind="ring", white_on_black=True) -> np.ndarray:
    """A thick stroke drawn off-centre, antialiased-free, like a canvas drawing."""
    h, w = shape
    image = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(image)
    if kind == "ring":
        draw.ellipse((30, 20, 130, 170), outline=255, width=16)
    elif kind == "line":
        draw.line((40, 30, 120, 180), fill=255, width=18)
    else:  # a "7": two strokes, lopsided mass
        draw.line((180, 40, 280, 40), fill=255, width=14)
        draw.line((280, 40, 210, 190), fill=255, width=14)
    array = np.asarray(image, dtype=np.uint8)
    return array if white_on_black else 255 - array


def png(array: np.ndarray) -> bytes:
    return image_to_png(array)


@pytest.mark.parametrize("kind", ["ring", "line", "seven"])
def test_stroke_is_boxed_to_20_and_centred_by_mass(kind):
    out = to_mnist(stroke_image(kind=kind))
    assert out.dtype == torch.uint8 and out.shape == (1, 28, 28)
    image = out[0].numpy()
    assert max(ink_box(image)) in (19, 20, 21)
    r, c = centre_of_mass(image)
    assert abs(r - 14) <= 0.5 and abs(c - 14) <= 0.5, (r, c)
    assert image.max() >= 250  # the stroke keeps full ink


def test_thin_and_tall_keeps_its_aspect_ratio():
    image = np.zeros((200, 300), np.uint8)
    image[20:180, 140:160] = 255  # a "1": 160 tall, 20 wide
    out = to_mnist(image)[0].numpy()
    h, w = ink_box(out)
    assert h in (19, 20, 21) and 2 <= w <= 4
    r, c = centre_of_mass(out)
    assert abs(r - 14) <= 0.5 and abs(c - 14) <= 0.5


@pytest.mark.parametrize("kind", ["ring", "line", "seven"])
def test_polarity_does_not_matter(kind):
    white = to_mnist(stroke_image(kind=kind, white_on_black=True))
    black = to_mnist(stroke_image(kind=kind, white_on_black=False))
    assert (white.int() - black.int()).abs().max() <= 1


def test_upload_and_rgb_and_canvas_paths_agree():
    grey = stroke_image(kind="seven", white_on_black=False)
    expected = to_mnist(grey)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    assert torch.equal(to_mnist(decode_image(png(rgb))), expected)
    jpeg = io.BytesIO()
    Image.fromarray(grey).save(jpeg, format="JPEG", quality=90)
    from_jpeg = to_mnist(decode_image(jpeg.getvalue()))
    assert (from_jpeg.float() - expected.float()).abs().mean() < 3
    # the canvas: a white stroke on a transparent background (RGB of transparent pixels is black)
    ink = 255 - grey
    rgba = np.zeros(grey.shape + (4,), np.uint8)
    rgba[..., :3], rgba[..., 3] = 255, ink
    assert (canvas_to_mnist(rgba).int() - expected.int()).abs().max() <= 1
    # ... and on an opaque black background
    opaque = np.dstack([ink, ink, ink, np.full_like(ink, 255)])
    assert (canvas_to_mnist(opaque).int() - expected.int()).abs().max() <= 1
    # a dark digit on a transparent background, as image editors save it, is not lost
    dark = np.zeros(grey.shape + (4,), np.uint8)
    dark[..., 3] = ink
    assert (to_mnist(decode_image(png(dark))).int() - expected.int()).abs().max() <= 1


def test_photo_like_grey_paper_with_noise():
    rng = np.random.default_rng(0)
    paper = 190 + rng.normal(0, 6, (240, 320))
    ink = stroke_image((240, 320), kind="ring") / 255.0
    photo = np.clip(paper * (1 - 0.75 * ink), 0, 255).astype(np.uint8)  # dark ink, grey paper
    out = to_mnist(photo)[0].numpy()
    assert max(ink_box(out)) in (19, 20, 21)
    r, c = centre_of_mass(out)
    assert abs(r - 14) <= 0.5 and abs(c - 14) <= 0.5
    clean = to_mnist(stroke_image((240, 320), kind="ring"))[0].numpy().astype(float)
    assert np.corrcoef(out.ravel(), clean.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("image", [
    np.zeros((280, 280), np.uint8),
    np.full((280, 280), 255, np.uint8),
    np.full((50, 60, 3), 128, np.uint8),
    np.zeros((280, 280, 4), np.uint8),  # an untouched transparent canvas
])
def test_empty_drawing_is_refused(image):
    with pytest.raises(ImageError, match="empty"):
        to_mnist(image) if image.ndim != 3 or image.shape[2] != 4 else canvas_to_mnist(image)


def test_faint_noise_alone_is_empty():
    rng = np.random.default_rng(1)
    with pytest.raises(ImageError, match="empty"):
        to_mnist(rng.integers(0, 10, (100, 100)).astype(np.uint8))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but holds one tiny data chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (np.random.default_rng(2).integers(0, 256, 5000).astype(np.uint8).tobytes(), "not an image"),
    (b"Dear teacher,\nthis is my homework: a seven.\n" * 20, "not an image"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image"),
], ids=["empty", "random-bytes", "text", "postscript"])
def test_not_an_image_is_refused(data, message):
    with pytest.raises(ImageError, match=message):
        decode_image(data)


def test_truncated_png_is_refused():
    data = png(stroke_image())
    with pytest.raises(ImageError, match="damaged or truncated"):
        decode_image(data[: len(data) // 2])


def test_too_many_bytes_is_refused():
    data = png(np.random.default_rng(3).integers(0, 256, (400, 400)).astype(np.uint8))
    assert len(data) > 100_000
    with pytest.raises(ImageError, match="too large.*limit is 0.1 MB"):
        decode_image(data, max_bytes=100_000)


def test_too_many_declared_pixels_is_refused_before_decoding():
    with pytest.raises(ImageError, match="too large: 9000x9000 pixels"):
        decode_image(_png_header_only(9000, 9000))
    with pytest.raises(ImageError, match="too large: 300x200 pixels"):
        decode_image(png(stroke_image()), max_pixels=10_000)
    # beyond PIL's own decompression-bomb limit, whatever our limit says
    with pytest.raises(ImageError, match="too large: its header declares more pixels"):
        decode_image(_png_header_only(60000, 60000), max_pixels=10**10)


def test_decode_gives_grey_or_rgba():
    assert decode_image(png(stroke_image())).shape == (200, 300)
    rgb = np.zeros((10, 12, 3), np.uint8)
    assert decode_image(png(rgb)).shape == (10, 12)
    rgba = np.zeros((10, 12, 4), np.uint8)
    assert decode_image(png(rgba)).shape == (10, 12, 4)
    sixteen = io.BytesIO()
    Image.fromarray(stroke_image().astype(np.uint16) * 257).save(sixteen, format="PNG")
    assert torch.equal(to_mnist(decode_image(sixteen.getvalue())), to_mnist(stroke_image()))


def test_accepts_only_28x28_grey():
    assert accepts_shape((1, 28, 28))
    assert not accepts_shape((3, 32, 32)) and not accepts_shape((1, 8, 8))


def blank_png(width: int, height: int, channels: int = 4) -> bytes:
    """An honest, fully decodable PNG of width x height blank pixels (RGBA by default), built row by
    row so that neither the test nor the file holds the pixels (4096x4096 RGBA: ~65 KB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    colour = {1: 0, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    packer, row = zlib.compressobj(9), bytes(1 + width * channels)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
            + chunk(b"IEND", b""))


def test_a_4096_square_rgba_upload_is_refused_from_its_header_before_decoding(monkeypatch):
    data = blank_png(4096, 4096)
    assert len(data) < 200_000  # small on disk; 64 MB of pixels, ~720 MB on the way to 28x28
    with Image.open(io.BytesIO(data)) as honest:
        assert honest.size == (4096, 4096) and honest.mode == "RGBA"

    def no_decoding(*args, **kwargs):
        raise AssertionError("pixels were decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    monkeypatch.setattr(Image.Image, "convert", no_decoding)
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match=r"too large: 4096x4096 pixels; the limit is 4,000,000"):
            decode_image(data)
        with pytest.raises(ImageError, match="too large: 4096x4096"):
            prepare_upload(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, peak


def test_a_large_jpeg_is_decoded_at_a_reduced_scale():
    """A 12-megapixel phone photo is not refused: the JPEG decoder shrinks it while decoding."""
    photo = Image.new("L", (4000, 3000), 235)
    ImageDraw.Draw(photo).line((1800, 900, 2200, 2100), fill=20, width=120)
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=80)
    decoded = decode_image(buffer.getvalue())
    assert decoded.shape == (1500, 2000)  # a quarter of the pixels, decoded as such
    assert to_mnist(decoded).max() == 255
    with pytest.raises(ImageError, match="too large: 4000x3000"):  # 1/8 is still too many
        decode_image(buffer.getvalue(), max_pixels=100_000)


def test_prepare_upload_gives_the_tensor_and_a_small_preview():
    data = png(stroke_image((600, 900)))
    prepared = prepare_upload(data, preview_side=300)
    assert torch.equal(prepared.tensor, to_mnist(decode_image(data)))
    with Image.open(io.BytesIO(prepared.preview)) as preview:
        assert preview.format == "PNG" and preview.size == (300, 200)
    with pytest.raises(ImageError, match="empty"):
        prepare_upload(png(np.zeros((50, 50), np.uint8)))


def test_upload_path_classifies_as_well_as_raw_tensors(capsys, one_thread):
    # one_thread (conftest.py) is module-scoped: this is the module's last test, so it still covers
    # just this test
    dataset = load_dataset("mnist-sample")
    config = PRESETS["seed"].replace(**{"train.epochs": 1, "train.dataset": "mnist-sample",
                                        "train.device": "cpu"})
    result = train(config, dataset)
    view = view_from_result(result, dataset)
    images, labels = dataset.test_x[:300], dataset.test_y[:300].numpy()
    raw = predict(view.model, view.model_input, images).argmax(1)
    uploaded = torch.stack([to_mnist(decode_image(image_to_png(im[0].numpy()))) for im in images])
    assert uploaded.shape == images.shape and uploaded.dtype == torch.uint8
    through = predict(view.model, view.model_input, uploaded).argmax(1)
    raw_acc, upload_acc = (raw == labels).mean(), (through == labels).mean()
    with capsys.disabled():
        print(f"\n[mnist-sample, 300 test images] raw tensors {raw_acc:.1%}, "
              f"upload path (PNG, decode, to_mnist) {upload_acc:.1%}")
    assert raw_acc > 0.85
    assert abs(raw_acc - upload_acc) <= 0.02
    one = predict(view.model, view.model_input, uploaded[0])
    assert one.shape == (10,) and abs(one.sum() - 1) < 1e-5
