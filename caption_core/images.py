"""Image input: anything a user may hand us -> an RGB ``PIL.Image``, or a clear ``ValueError``.

Accepts a path, raw bytes, a file object, a ``PIL.Image`` or an array (H, W), (H, W, 1|3|4) of
uint8 / uint16 / float. Applies EXIF orientation, takes the first frame of animations, converts
every mode (L, LA, P, RGBA, CMYK, I;16, I, F, ...) to RGB, and refuses non-images, empty and
truncated files, and images over a pixel limit (decompression bombs) with a ``ValueError`` that
says what was wrong. The resizing used by every encoder lives here too, so training and the app
preprocess identically.
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


@dataclasses.dataclass(frozen=True)
class ImageLimits:
    """Limits applied to every input image."""

    max_pixels: int = 40_000_000  # width * height above this is refused (decompression bombs)
    min_side: int = 1  # images narrower or shorter than this are refused
    max_bytes: int = 50 * 1024 * 1024  # encoded files larger than this are refused


DEFAULT_LIMITS = ImageLimits()


class ImageError(ValueError):
    """An input that is not a usable image. Subclasses ValueError."""


def _describe(src: Any) -> str:
    if isinstance(src, (str, os.PathLike)):
        return f"'{os.fspath(src)}'"
    return type(src).__name__


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparent pixels become white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        return Image.fromarray(_scale_to_uint8(arr)).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map an integer or float array of any range to uint8."""
    arr = np.asarray(arr)
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.bool_):
        return arr.astype(np.uint8) * 255
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if not finite.any():
        raise ImageError("array has no finite values")
    arr = np.where(finite, arr, 0.0)
    if np.issubdtype(np.asarray(arr).dtype, np.floating) and arr.min() >= 0.0 and arr.max() <= 1.0:
        arr = arr * 255.0  # float image in [0, 1]
    elif arr.max() > 255.0:
        arr = arr / (65535.0 if arr.max() <= 65535.0 else arr.max()) * 255.0
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _from_array(arr: np.ndarray) -> Image.Image:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageError(f"array of shape {arr.shape} is not an image: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    if arr.size == 0:
        raise ImageError(f"array of shape {arr.shape} is empty")
    img = Image.fromarray(_scale_to_uint8(arr))
    return _to_rgb(img)


def _check_size(width: int, height: int, limits: ImageLimits, what: str) -> None:
    if width < limits.min_side or height < limits.min_side:
        raise ImageError(f"{what} is {width}x{height} pixels: too small (at least {limits.min_side} per side)")
    if width * height > limits.max_pixels:
        raise ImageError(
            f"{what} is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{limits.max_pixels:,}: resize it first (or raise ImageLimits.max_pixels)"
        )


def load_image(src: Any, limits: ImageLimits = DEFAULT_LIMITS, name: str | None = None) -> Image.Image:
    """Open ``src`` (path, bytes, file object, PIL image or array) as an RGB PIL image.

    Raises ``ImageError`` (a ``ValueError``) with a message a person can act on. ``name``: what the
    messages call the file (a server names an upload by the file name its user chose, never by the
    path it was stored under); default: the path itself.
    """
    if isinstance(src, Image.Image):
        img = src
        what = "image"
        _check_size(img.width, img.height, limits, what)
        img.load()
    elif isinstance(src, np.ndarray):
        if src.ndim >= 2:
            _check_size(src.shape[1], src.shape[0], limits, "array")
        return _from_array(src)
    else:
        what = f"'{name}'" if name else _describe(src)
        if isinstance(src, (str, os.PathLike)):
            path = os.fspath(src)
            if not os.path.isfile(path):
                raise ImageError(f"no such image file: {what}")
            size = os.path.getsize(path)
            if size == 0:
                raise ImageError(f"{what} is empty (0 bytes)")
            if size > limits.max_bytes:
                raise ImageError(f"{what} is {size:,} bytes, over the limit of {limits.max_bytes:,}")
            with open(path, "rb") as f:
                data = f.read()
        elif isinstance(src, (bytes, bytearray, memoryview)):
            data = bytes(src)
        elif hasattr(src, "read"):
            data = src.read()
        else:
            raise ImageError(f"cannot read an image from a {type(src).__name__}: pass a path, bytes, a PIL image or an array")
        if not data:
            raise ImageError(f"{what} is empty (0 bytes)")
        if len(data) > limits.max_bytes:
            raise ImageError(f"{what} is {len(data):,} bytes, over the limit of {limits.max_bytes:,}")
        img = _open_bytes(data, what, limits)
    try:
        if getattr(img, "is_animated", False):
            img.seek(0)  # first frame of GIF / APNG / WebP animations
        img = ImageOps.exif_transpose(img) or img
        return _to_rgb(img)
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"{what} could not be decoded ({exc}): the file is damaged or not an image") from None


def _open_bytes(data: bytes, what: str, limits: ImageLimits) -> Image.Image:
    try:
        # No warnings.catch_warnings() here: it swaps a process-wide filter list and is not thread-safe
        # (images are decoded in worker threads). Pillow refuses > 2x MAX_IMAGE_PIXELS itself; our
        # own limit (default 40 MP, below Pillow's warning threshold) is checked before decoding.
        img = Image.open(io.BytesIO(data))
        _check_size(img.width, img.height, limits, what)  # before decoding any pixel
        img.load()  # decode now: truncated files fail here, not later
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{what} is not an image that Pillow can read (JPEG, PNG, GIF, WebP, BMP, TIFF...)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{what} is refused as a possible decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{what} is damaged or truncated ({exc}); re-save or re-export it") from None
    return img


def load_images(sources: Sequence[Any], limits: ImageLimits = DEFAULT_LIMITS) -> list[Image.Image]:
    """``load_image`` over a list."""
    return [load_image(s, limits) for s in sources]


def resize_array(img: Image.Image, size: int | tuple[int, int]) -> np.ndarray:
    """RGB PIL image -> uint8 array (H, W, 3) of the given size (squashed, not cropped: the
    Flickr8k copies were squashed to 224x224, so the app matches training)."""
    h, w = (size, size) if isinstance(size, int) else size
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8)  # (H, W, 3)


def batch_arrays(images: Sequence[Image.Image], size: int | tuple[int, int]) -> np.ndarray:
    """List of RGB images -> uint8 batch (N, H, W, 3)."""
    return np.stack([resize_array(im, size) for im in images])  # (N, H, W, 3)
