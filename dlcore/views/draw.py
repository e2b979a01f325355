"""A drawing or an uploaded picture turned into what an MNIST model sees, the way MNIST was made.

The MNIST recipe (LeCun et al.): white ink on black, the digit's bounding box scaled (keeping its
aspect ratio, antialiased) so its longer side is 20 pixels, then placed in a 28x28 field so that its
centre of mass lands on pixel (14, 14), row and column indices counted from 0.

    decode_image(bytes)  -> grey (H, W) or RGBA (H, W, 4) uint8 array; refuses what is not a sane image
    prepare_upload(bytes)-> Prepared: the MNIST tensor and a small PNG preview, decoded once
    to_mnist(array)      -> uint8 tensor (1, 28, 28)
    canvas_to_mnist(rgba)-> the same, for the RGBA array a drawing canvas returns
    predict(model, model_input, image) -> class probabilities

Everything that can go wrong with the user's input raises ImageError with a message for the user.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = ["FIELD", "BOX", "CENTRE", "FORMATS", "MAX_BYTES", "MAX_PIXELS", "ImageError", "Prepared",
           "accepts_shape", "canvas_to_mnist", "decode_image", "image_to_png", "predict",
           "prepare_upload", "to_mnist"]

FIELD = 28          # the side of an MNIST image
BOX = 20            # the longer side of the digit inside it
CENTRE = 14.0       # where the centre of mass lands (row, column)
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")  # decoders we let PIL use on untrusted bytes
MIN_CONTRAST = 24   # ink must differ this many grey levels from the background to count as ink
BOMB = "The image is too large: its header declares more pixels than can be decoded safely."
NOISE_CUT = 51      # on a noisy background (photo, JPEG), weaker ink than this (of 255) is dropped
MAX_BYTES = 5_000_000   # an upload's file size
MAX_PIXELS = 4_000_000  # pixels decoded: an RGBA picture costs ~40 bytes a pixel on its way to 28x28
JPEG_SCALES = (2, 4, 8)  # a JPEG decoder can shrink by these factors while decoding, at no cost


class ImageError(ValueError):
    """The input cannot be used; the message says why, in words meant for the user."""


def accepts_shape(shape: tuple[int, ...]) -> bool:
    """Whether a dataset of images `shape` (C, H, W) is one this preprocessing serves (1x28x28)."""
    return tuple(shape) == (1, FIELD, FIELD)


# ---------------------------------------------------------------- decoding

def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _too_large(width: int, height: int, max_pixels: int) -> ImageError:
    side = int(max_pixels ** 0.5)
    return ImageError(f"The image is too large: {width}x{height} pixels; the limit is "
                      f"{max_pixels:,} pixels (for example {side}x{side}).")


def _open(data: bytes) -> Image.Image:
    """The image's header, read by PIL; no pixel is decoded yet."""
    try:
        return Image.open(io.BytesIO(bytes(data)), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(BOMB) from None
    except Exception:  # noqa: BLE001 - whatever a decoder trips on, the file is not a usable image
        raise ImageError("This file is not an image that can be read; upload a PNG or JPEG "
                         "picture.") from None


def _shrink_while_decoding(image: Image.Image, max_pixels: int) -> None:
    """A JPEG above the limit is decoded at 1/2, 1/4 or 1/8 of its size (the decoder's own draft
    mode: no full-size pixels are ever made), when one of those brings it under the limit."""
    width, height = image.size
    if image.format != "JPEG" or width * height <= max_pixels:
        return
    for scale in JPEG_SCALES:
        if -(-width // scale) * -(-height // scale) <= max_pixels:
            image.draft(None, (-(-width // scale), -(-height // scale)))
            return


def decode_image(data: bytes, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS
                 ) -> np.ndarray:
    """Decode image file bytes to a uint8 array: (H, W) grey, or (H, W, 4) RGBA when the image has
    transparency. EXIF rotation is applied. Raises ImageError for anything that is not a readable
    PNG/JPEG/BMP/GIF/WebP image of at most `max_bytes` bytes and `max_pixels` pixels.

    The pixel count is checked from the header, before anything is decoded (a JPEG over the limit
    is decoded at a reduced scale when that brings it under)."""
    if data is None or len(data) == 0:
        raise ImageError("The file is empty.")
    if len(data) > max_bytes:
        raise ImageError(f"The file is too large: {_megabytes(len(data))}; the limit is "
                         f"{_megabytes(max_bytes)}.")
    image = _open(data)
    width, height = image.size  # from the header: nothing decoded yet
    if width <= 0 or height <= 0:
        raise ImageError("The image has no pixels.")
    _shrink_while_decoding(image, max_pixels)
    if image.size[0] * image.size[1] > max_pixels:
        raise _too_large(width, height, max_pixels)
    try:
        image.load()
        image = ImageOps.exif_transpose(image) or image
        return _to_array(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(BOMB) from None
    except MemoryError:
        raise ImageError("The image is too large to decode on this server.") from None
    except Exception:  # noqa: BLE001 - OSError (truncated), SyntaxError, struct.error, ...
        raise ImageError("The image file is damaged or truncated and cannot be decoded.") from None


@dataclass(frozen=True)
class Prepared:
    """An upload, decoded once: what the network is shown and a small preview of the picture."""

    tensor: torch.Tensor  # uint8 (1, 28, 28)
    preview: bytes        # PNG, its longer side at most the `preview_side` asked for


def prepare_upload(data: bytes, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
                   preview_side: int = 560) -> Prepared:
    """Uploaded file bytes as an MNIST tensor and a PNG preview; raises ImageError as decode_image
    and to_mnist do. Meant to be called once per upload (the preview is small, so a page can keep
    the result instead of decoding the file again on every rerun)."""
    picture = decode_image(data, max_bytes, max_pixels)
    try:
        tensor = to_mnist(picture)
        thumb = Image.fromarray(np.ascontiguousarray(picture))
        thumb.thumbnail((preview_side, preview_side), Image.Resampling.LANCZOS)
        return Prepared(tensor, image_to_png(np.asarray(thumb)))
    except MemoryError:
        raise ImageError("The image is too large to process on this server.") from None


def _to_array(image: Image.Image) -> np.ndarray:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # 16-bit or float grey
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if has_alpha:
        return np.asarray(image.convert("RGBA"), dtype=np.uint8)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def image_to_png(image: np.ndarray | torch.Tensor) -> bytes:
    """A uint8 grey (H, W) or (1, H, W) image, or RGB/RGBA (H, W, 3|4), as PNG file bytes."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array.astype(np.uint8))).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------- grey levels

def _luminance(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _grey(image: np.ndarray) -> np.ndarray:
    """Any (H, W), (H, W, 1|3|4) uint8 array as float grey levels 0..255.

    With transparency, the picture is laid on a background that contrasts with what is drawn:
    black under light strokes, white under dark ones (a dark digit on a transparent background
    must not vanish into the black that transparent pixels usually hold)."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ImageError(f"Expected 8-bit pixels, got {array.dtype}.")
    if array.ndim == 2:
        return array.astype(np.float64)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(f"Expected a grey, RGB or RGBA image, got an array of shape {array.shape}.")
    if array.shape[2] == 1:
        return array[..., 0].astype(np.float64)
    grey = _luminance(array[..., :3])
    if array.shape[2] == 3:
        return grey
    alpha = array[..., 3].astype(np.float64) / 255.0
    if alpha.min() >= 1.0:
        return grey
    if alpha.sum() == 0:
        return np.zeros_like(grey)  # fully transparent: nothing drawn
    stroke = float((grey * alpha).sum() / alpha.sum())
    background = 0.0 if stroke >= 128 else 255.0
    return grey * alpha + background * (1.0 - alpha)


def _border(grey: np.ndarray, width: int) -> np.ndarray:
    w = max(1, min(width, min(grey.shape) // 2))
    return np.concatenate([grey[:w].ravel(), grey[-w:].ravel(), grey[w:-w, :w].ravel(),
                           grey[w:-w, -w:].ravel()])


def _ink(grey: np.ndarray) -> np.ndarray:
    """Ink as float 0..255 on a 0 background: inverted when the background is light, the
    background level (and its noise, read on the border) taken away, the contrast stretched."""
    border = _border(grey, max(1, min(grey.shape) // 50))
    if np.median(border) > 127:  # black on white (paper, a scan): MNIST is white on black
        grey, border = 255.0 - grey, 255.0 - border
    floor = float(np.percentile(border, 95))
    peak = float(grey.max())
    if peak - floor < MIN_CONTRAST:
        raise ImageError("The drawing is empty: no ink stands out from the background.")
    if floor <= 0:  # a clean drawing on pure black: keep its grey levels (exactly, at full ink)
        return grey if peak >= 255 else grey * (255.0 / peak)
    ink = np.clip((grey - floor) * (255.0 / (peak - floor)), 0, 255)
    ink[ink < NOISE_CUT] = 0  # a photo or a JPEG: paper grain and artefacts are not ink
    return ink


# ---------------------------------------------------------------- the MNIST recipe

def _centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    total = image.sum()
    rows = (image.sum(1) * np.arange(image.shape[0])).sum() / total
    cols = (image.sum(0) * np.arange(image.shape[1])).sum() / total
    return float(rows), float(cols)


def _place(box: np.ndarray) -> np.ndarray:
    """Paste `box` (at most 20x20) into 28x28 with its centre of mass on (14, 14), by whole pixels as
    MNIST did; the offset is held so that no ink falls outside the field."""
    h, w = box.shape
    r, c = _centre_of_mass(box.astype(np.float64))
    top = int(np.clip(np.floor(CENTRE - r + 0.5), 0, FIELD - h))
    left = int(np.clip(np.floor(CENTRE - c + 0.5), 0, FIELD - w))
    field = np.zeros((FIELD, FIELD), dtype=np.uint8)
    field[top:top + h, left:left + w] = box
    return field


def to_mnist(image: np.ndarray) -> torch.Tensor:
    """A picture (H, W) or (H, W, 3|4) uint8, any polarity, as a uint8 MNIST image (1, 28, 28).

    Raises ImageError when there is no ink at all ("the drawing is empty")."""
    ink = _ink(_grey(image))
    rows, cols = np.flatnonzero(ink.max(1) > 0), np.flatnonzero(ink.max(0) > 0)
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, min(BOX, round(w * scale))), max(1, min(BOX, round(h * scale))))  # (w, h)
    small = Image.fromarray(np.rint(crop).astype(np.uint8), mode="L")
    if small.size != size:
        small = small.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    box = np.asarray(small, dtype=np.uint8)
    if int(box.max()) == 0:  # a single faint speck can vanish in the scaling
        raise ImageError("The drawing is empty: no ink stands out from the background.")
    return torch.from_numpy(_place(box).copy()).unsqueeze(0)


def canvas_to_mnist(rgba: np.ndarray) -> torch.Tensor:
    """The RGBA array of a drawing canvas as an MNIST image. Strokes count where they are opaque:
    a light stroke on a transparent or black canvas, or a dark one on a white canvas, both work."""
    array = np.asarray(rgba)
    if array.ndim != 3 or array.shape[2] != 4:
        raise ImageError(f"Expected the canvas's RGBA pixels, got an array of shape {array.shape}.")
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array.astype(np.float64)), 0, 255).astype(np.uint8)
    return to_mnist(array)


# ---------------------------------------------------------------- the model's answer

def predict(model: torch.nn.Module, model_input: Callable[[torch.Tensor], torch.Tensor],
            image: torch.Tensor) -> np.ndarray:
    """Class probabilities (num_classes,) of `model` for one uint8 image (1, 28, 28) or a batch
    (N, 1, 28, 28) -> (N, num_classes). `model_input` maps uint8 images to the network's input
    (RunView.model_input)."""
    batch = image.unsqueeze(0) if image.dim() == 3 else image
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    with torch.no_grad():
        logits = model(model_input(batch.cpu()).to(device))
        probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
    model.train(was_training)
    return probs[0] if image.dim() == 3 else probs
