"""Bad and unusual inputs through the library and the running app; concurrency; kill -9 and resume."""

import io
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib

import numpy as np
import pytest
from PIL import Image

os.environ["CAPTION_APP_NO_DEMO"] = "1"

from caption_core.captioner import Captioner  # noqa: E402
from caption_core.images import ImageError  # noqa: E402
from helpers import free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_parts):
    import app
    from caption_core.bundle import save_bundle

    root = tmp_path_factory.mktemp("hard")
    enc, dec, vocab = tiny_parts
    save_bundle(str(root / "weights" / "tiny"), encoder=enc, decoder=dec, vocab=vocab)
    demo = app.build_demo(app.AppConfig(weights_dir=str(root / "weights"), data_dir=None, concurrency=2, queue_size=40))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, show_error=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_every_case_through_the_running_app(server, files):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    for name, (path, expect) in sorted(files.items()):
        if expect == "ok":
            details = client.predict(handle_file(path), "tiny", "greedy", api_name="/caption")[2]
            assert details["captions"][0]["caption"], name
        else:
            with pytest.raises(Exception, match="can't be captioned"):
                client.predict(handle_file(path), "tiny", "greedy", api_name="/caption")
        # the server answers the next request normally
        ok = client.predict(handle_file(files["one_pixel"][0]), "tiny", "greedy", api_name="/caption")[2]
        assert ok["captions"], f"server broken after {name}"


def test_32_concurrent_requests_each_get_their_own_answer(server, tmp_path, tiny_parts):
    """Distinct images; every response must equal what the library says for that image."""
    import concurrent.futures

    from gradio_client import Client, handle_file

    enc, dec, vocab = tiny_parts
    captioner = Captioner(enc, dec, vocab)
    rng = np.random.default_rng(11)
    paths, expected = [], []
    for i in range(32):
        arr = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
        path = tmp_path / f"img{i}.png"
        Image.fromarray(arr).save(path)
        paths.append(str(path))
        expected.append(captioner.caption(str(path), strategy="greedy", max_length=12)[0].captions[0].text)
    clients = [Client(server, verbose=False) for _ in range(8)]

    def ask(i):
        return clients[i % 8].predict(handle_file(paths[i]), "tiny", "greedy", 3, 0.0, 1.0, 0, 1.0, 0, 12, 1, 0,
                                      api_name="/caption")[2]["captions"][0]["caption"]

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        got = list(ex.map(ask, range(32)))
    assert got == expected


def test_full_queue_gives_a_clear_busy_message(tiny_parts, tmp_path):
    """A queue of size 1 with one slow request in progress: extra requests are refused at once."""
    import concurrent.futures

    import app
    from gradio_client import Client, handle_file

    from caption_core.bundle import save_bundle

    enc, dec, vocab = tiny_parts
    save_bundle(str(tmp_path / "w" / "tiny"), encoder=enc, decoder=dec, vocab=vocab)
    demo = app.build_demo(app.AppConfig(weights_dir=str(tmp_path / "w"), data_dir=None, concurrency=1, queue_size=1))
    slow = demo.handlers.caption

    def slower(*a, **k):
        time.sleep(1.5)
        return slow(*a, **k)

    demo.fns[[i for i, f in demo.fns.items() if f.api_name == "caption"][0]].fn = slower
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, show_error=True, quiet=True)
    try:
        img = tmp_path / "x.png"
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(img)

        def ask(_):
            try:
                Client(f"http://127.0.0.1:{port}/", verbose=False).predict(handle_file(str(img)), "tiny",
                                                                           api_name="/caption")
                return "ok"
            except Exception as exc:
                return str(exc)

        t = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(5) as ex:
            results = list(ex.map(ask, range(5)))
        assert results.count("ok") >= 1
        refused = [r for r in results if r != "ok"]
        assert refused and all("queue is full" in r.lower() or "busy" in r.lower() for r in refused), results
        assert time.perf_counter() - t < 60
    finally:
        demo.close()


KILL_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
    from caption_core.encoders import build_encoder
    from training.datasets import load_captions
    from training.features import extract_features
    from training.train_decoder import DecoderTrainConfig, train_decoder
    enc = build_encoder("vit_custom", {{"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32, "stem": "linear", "batch_size": 1}})
    enc.model.set_weights([w * 0 + 0.01 * (i + 1) for i, w in enumerate(enc.model.get_weights())])  # same weights every run
    data, cache, out = sys.argv[1], sys.argv[2], sys.argv[3]
    ex = {{s: load_captions(data, s) for s in ("train", "dev")}}
    feats = {{s: extract_features(enc, ex[s], data, s, cache, progress=False) for s in ex}}
    print("FEATURES DONE", flush=True)
    cfg = DecoderTrainConfig(out=out, epochs=int(sys.argv[4]), batch_size=4, min_count=1, embed_dim=8, units=8, patience=50)
    state = train_decoder(cfg, ex["train"], *feats["train"], ex["dev"], *feats["dev"], resume=True)
    print("LOSSES", [h["train_loss"] for h in state["history"]], flush=True)
""")


def _run_until(args, predicate, timeout=120):
    """Start a process, SIGKILL it as soon as predicate() holds."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if predicate():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.05)
    proc.wait()
    return False


def test_kill_minus_nine_then_resume_matches_an_uninterrupted_run(tmp_path):
    import json

    from helpers import make_flickr

    data = make_flickr(tmp_path / "flickr", per_split=(40, 6, 2), bad=False)
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(root=ROOT, tests=os.path.join(ROOT, "tests")))
    cache, out = str(tmp_path / "cache"), str(tmp_path / "run")

    def index_done():
        for d, _, fs in os.walk(cache):
            if "index.json" in fs and "train" in d:
                try:
                    return 0 < json.load(open(os.path.join(d, "index.json")))["done"] < 40
                except (ValueError, OSError):
                    return False
        return False

    assert _run_until([sys.executable, str(script), data, cache, out, "6"], index_done), "no kill during extraction"

    def two_epochs():
        try:
            return json.load(open(os.path.join(out, "state.json")))["epochs_done"] >= 2
        except (ValueError, OSError):
            return False

    assert _run_until([sys.executable, str(script), data, cache, out, "6"], two_epochs), "no kill during training"
    resumed = subprocess.run([sys.executable, str(script), data, cache, out, "6"], capture_output=True, text=True, timeout=300)
    straight = subprocess.run([sys.executable, str(script), data, str(tmp_path / "cache2"), str(tmp_path / "run2"), "6"],
                              capture_output=True, text=True, timeout=300)
    get = lambda p: json.loads(p.stdout.split("LOSSES", 1)[1].strip().replace("'", '"'))
    a, b = get(resumed), get(straight)
    assert len(a) == len(b) == 6
    np.testing.assert_allclose(a, b, rtol=1e-3)
    f1 = [np.load(os.path.join(d, "features.npy")) for d, _, fs in sorted(os.walk(cache)) if "features.npy" in fs]
    f2 = [np.load(os.path.join(d, "features.npy")) for d, _, fs in sorted(os.walk(str(tmp_path / "cache2"))) if "features.npy" in fs]
    for x, y in zip(f1, f2):
        np.testing.assert_allclose(x, y, atol=1e-5)
