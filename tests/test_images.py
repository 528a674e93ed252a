import io
import zlib
import struct

import numpy as np
import pytest
from PIL import Image

from caption_core.images import ImageError, ImageLimits, batch_arrays, load_image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def rgb(w=40, h=30):
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)
    arr[: h // 2, :, 1] = 200
    return Image.fromarray(arr)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1", "YCbCr"])
def test_every_mode_becomes_rgb(mode):
    img = rgb().convert(mode) if mode not in ("I;16",) else Image.fromarray((np.arange(1200).reshape(30, 40) * 50).astype(np.uint16))
    out = load_image(img)
    assert out.mode == "RGB" and out.size == (40, 30)


def test_palette_with_transparency_from_png_bytes():
    img = rgb().convert("P")
    img.info["transparency"] = 0
    out = load_image(encode(img, "PNG", transparency=0))
    assert out.mode == "RGB"


def test_rgba_transparent_pixels_become_white():
    arr = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    out = np.asarray(load_image(Image.fromarray(arr, "RGBA")))
    assert (out == 255).all()


def test_sixteen_bit_png_bytes_keep_their_contrast():
    arr = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (8, 1))
    out = np.asarray(load_image(encode(Image.fromarray(arr), "PNG")))
    assert out[..., 0].min() == 0 and out[..., 0].max() == 255


def test_exif_orientation_is_applied():
    img = rgb(40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = load_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (30, 40)


def test_first_frame_of_animated_gif():
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = np.asarray(load_image(buf.getvalue()))
    assert out[10, 10, 0] > 200 and out[10, 10, 2] < 50


@pytest.mark.parametrize("src, message", [
    (b"", "empty"),
    (b"this is not an image at all", "not an image"),
    (b"%PDF-1.4 not an image", "not an image"),
])
def test_bad_bytes_are_refused_clearly(src, message):
    with pytest.raises(ImageError, match=message):
        load_image(src)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_are_refused(fmt):
    data = encode(rgb(200, 200), fmt)
    with pytest.raises(ImageError, match="damaged or truncated|could not be decoded"):
        load_image(data[: len(data) // 2])


def test_empty_file_and_missing_file(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(empty)
    with pytest.raises(ImageError, match="no such image file"):
        load_image(tmp_path / "missing.jpg")


def png_bomb(width: int, height: int) -> bytes:
    """A valid greyscale PNG header claiming a huge size with tiny compressed data."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    raw = zlib.compress(b"\x00" * (width + 1) * 16, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding():
    data = png_bomb(30000, 30000)  # 900 Mpixels declared, a few KB on disk
    assert len(data) < 100_000
    with pytest.raises(ImageError, match="over the limit|decompression bomb"):
        load_image(data)


def test_pixel_limit_is_configurable():
    with pytest.raises(ImageError, match="over the limit"):
        load_image(rgb(100, 100), ImageLimits(max_pixels=5000))
    assert load_image(rgb(100, 100), ImageLimits(max_pixels=20000)).size == (100, 100)


def test_one_pixel_image_works():
    assert load_image(encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG")).size == (1, 1)


@pytest.mark.parametrize("arr", [
    np.zeros((10, 12), np.uint8), np.zeros((10, 12, 1), np.uint8), np.zeros((10, 12, 4), np.uint8),
    np.random.default_rng(0).random((10, 12, 3)), np.full((10, 12, 3), 60000, np.uint16),
])
def test_arrays_are_accepted(arr):
    assert load_image(arr).size == (12, 10)


@pytest.mark.parametrize("arr", [np.zeros((10,), np.uint8), np.zeros((10, 12, 5), np.uint8), np.zeros((0, 4, 3), np.uint8)])
def test_bad_arrays_are_refused(arr):
    with pytest.raises(ImageError):
        load_image(arr)


def test_wrong_type_is_refused():
    with pytest.raises(ImageError, match="cannot read an image"):
        load_image(12345)


def test_wrong_extension_still_reads(tmp_path):
    path = tmp_path / "photo.txt"
    path.write_bytes(encode(rgb(), "PNG"))
    assert load_image(path).size == (40, 30)


def test_resize_squashes_to_the_encoder_size():
    batch = batch_arrays([rgb(40, 30), rgb(10, 70)], 16)
    assert batch.shape == (2, 16, 16, 3) and batch.dtype == np.uint8


