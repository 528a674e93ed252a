"""Bad and unusual image files: through the library, and through the running app's API."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from caption_core.captioner import Captioner
from caption_core.images import ImageError


def _save(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _photo(w=64, h=48):
    rng = np.random.default_rng(5)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _png_bomb():
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    w = h = 60000
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 100000, 9)) + chunk(b"IEND", b""))


def _exif_rotated():
    exif = Image.Exif()
    exif[0x0112] = 8
    return _save(_photo(), "JPEG", exif=exif.tobytes())


def _animated():
    frames = [Image.new("RGB", (30, 30), c) for c in ("red", "blue", "green")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


def _palette_transparent():
    img = _photo().convert("P")
    return _save(img, "PNG", transparency=3)


# name -> (bytes, file suffix, "ok" or an error fragment)
CASES = {
    "not_an_image": (b"hello, I am text", ".jpg", "not an image"),
    "empty": (b"", ".png", "empty"),
    "truncated_jpeg": (_save(_photo(200, 200), "JPEG")[:300], ".jpg", "damaged or truncated|could not be decoded"),
    "truncated_png": (_save(_photo(200, 200), "PNG")[:400], ".png", "damaged or truncated|could not be decoded"),
    "huge_dimensions": (_png_bomb(), ".png", "over the limit|decompression bomb"),
    "one_pixel": (_save(Image.new("RGB", (1, 1), "white"), "PNG"), ".png", "ok"),
    "sixteen_bit": (_save(Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20), "PNG"), ".png", "ok"),
    "cmyk": (_save(_photo().convert("CMYK"), "JPEG"), ".jpg", "ok"),
    "palette_transparency": (_palette_transparent(), ".png", "ok"),
    "animated_gif": (_animated(), ".gif", "ok"),
    "exif_rotated": (_exif_rotated(), ".jpg", "ok"),
    "grayscale": (_save(_photo().convert("L"), "JPEG"), ".jpg", "ok"),
    "wrong_extension": (_save(_photo(), "PNG"), ".jpg", "ok"),
    "rgba_webp": (_save(_photo().convert("RGBA"), "WEBP"), ".webp", "ok"),
    "tiny_bmp": (_save(_photo(3, 2), "BMP"), ".bmp", "ok"),
    "tiff_float": (_save(Image.fromarray(np.random.default_rng(0).random((20, 20)).astype(np.float32)), "TIFF"), ".tif", "ok"),
    "zip_file": (b"PK\x03\x04" + b"\x00" * 100, ".png", "not an image"),
    "html": (b"<html><body>no</body></html>", ".png", "not an image"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    out = {}
    for name, (data, suffix, expect) in CASES.items():
        path = folder / f"{name}{suffix}"
        path.write_bytes(data)
        out[name] = (str(path), expect)
    return out


def test_at_least_fifteen_cases():
    assert len(CASES) >= 15


@pytest.mark.parametrize("name", sorted(CASES))
def test_library_gives_a_caption_or_a_clear_error(name, files, tiny_parts):
    enc, dec, vocab = tiny_parts
    captioner = Captioner(enc, dec, vocab)
    path, expect = files[name]
    if expect == "ok":
        result = captioner.caption(path)[0]
        assert result.captions[0].text
    else:
        with pytest.raises(ImageError, match=expect):
            captioner.caption(path)


def test_every_case_through_the_running_app(tiny_server, files):
    from gradio_client import Client, handle_file

    client = Client(tiny_server, verbose=False)
    for name, (path, expect) in sorted(files.items()):
        if expect == "ok":
            details = client.predict(handle_file(path), "tiny", "greedy", api_name="/caption")[2]
            assert details["captions"][0]["caption"], name
        else:
            with pytest.raises(Exception, match="can't be captioned") as err:
                client.predict(handle_file(path), "tiny", "greedy", api_name="/caption")
            message = str(err.value)
            # the file is named as its user named it, never by where the server stored the upload
            assert os.path.basename(path) in message or "'" not in message, message
            assert "/" not in message.split("can't be captioned", 1)[1], message
        # the server answers the next request normally
        ok = client.predict(handle_file(files["one_pixel"][0]), "tiny", "greedy", api_name="/caption")[2]
        assert ok["captions"], f"server broken after {name}"


