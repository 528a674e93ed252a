"""The app: handlers called directly, the server through gradio_client, and a real browser."""

import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

os.environ["CAPTION_APP_NO_DEMO"] = "1"  # import app without building the default page

import gradio as gr  # noqa: E402

import app  # noqa: E402
from caption_core.bundle import save_bundle  # noqa: E402

from helpers import free_port, make_flickr  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_parts):
    root = tmp_path_factory.mktemp("app")
    data = make_flickr(root / "flickr", per_split=(6, 3, 4), bad=False)
    enc, dec, vocab = tiny_parts
    for name in ("tiny-a", "tiny-b"):
        save_bundle(str(root / "weights" / name), encoder=enc, decoder=dec, vocab=vocab,
                    metrics={"flickr/test": {"beam": {"BLEU-4": 0.1, "CIDEr": 0.2}}}, card=f"# {name}\n")
    cfg = app.AppConfig(weights_dir=str(root / "weights"), data_dir=data, n_examples=3, cache_dir=str(root / "cache"))
    demo = app.build_demo(cfg)
    demo.handlers.refs.ready.wait(30)
    return demo, data, root


def test_page_lists_bundles_and_missing_encoders(setup):
    demo, _, _ = setup
    h = demo.handlers
    assert h.models.names == ["tiny-a", "tiny-b"]
    missing = dict(h.models.missing_encoders())
    assert set(missing) == {"xception", "vit_pretrained", "efficientnet_lite0"}
    assert missing["xception"] == "python -m training build --encoder xception"
    table = app.encoder_table(h.models)
    assert "not built" in table and "python -m training build --encoder efficientnet_lite0" in table
    assert len(demo.example_paths) == 3


def test_caption_handler_with_references_matched_by_content(setup, tmp_path):
    demo, data, _ = setup
    h = demo.handlers
    photo = demo.example_paths[0]
    copy = tmp_path / "renamed_upload.png"  # a re-encoded copy under another name
    Image.open(photo).save(copy)
    md, refs_md, details = h.caption(str(copy), "tiny-a", "beam", 2, 0.0, 1.0, 0, 1.0, 0, 10, 2, 0)
    assert details["captions"][0]["caption"] and len(details["captions"]) == 2
    assert details["reference_image"] == os.path.basename(photo)
    assert "Reference captions" in refs_md and "BLEU-4" in details["captions"][0] and "CIDEr" in details["captions"][0]
    assert md.startswith("### ")
    unknown = np.full((30, 30, 3), 77, np.uint8)
    _, refs_md, details = h.caption(unknown, "tiny-a", "greedy")
    assert details["reference_image"] is None and "Not a dataset photo" in refs_md


def test_sampling_options_and_seed(setup):
    demo, _, _ = setup
    h = demo.handlers
    args = (demo.example_paths[1], "tiny-b", "sample", 3, 0.0, 0.8, 5, 0.9, 2, 8, 3)
    a = h.caption(*args, 42)[2]
    b = h.caption(*args, 42)[2]
    assert a["captions"] == b["captions"] and len(a["captions"]) == 3
    assert a["options"]["top_k"] == 5 and a["options"]["seed"] == 42


def test_compare_and_explain_and_card(setup):
    demo, _, _ = setup
    h = demo.handlers
    rows, refs_md = h.compare(demo.example_paths[0])
    assert [r[0] for r in rows] == ["tiny-a", "tiny-b"] and all(r[1] for r in rows)
    gallery, caption = h.explain(demo.example_paths[0], "tiny-a", "a red dog")
    assert caption == "a red dog" and [label.split()[0] for _, label in gallery] == ["a", "red", "dog"]
    assert all(isinstance(img, Image.Image) for img, _ in gallery)
    assert "# tiny-b" in h.card("tiny-b")


@pytest.mark.parametrize("bad, message", [
    (None, "Upload a photo"),
    (b"definitely not an image", "not an image"),
])
def test_bad_inputs_give_clear_errors(setup, tmp_path, bad, message):
    demo, _, _ = setup
    src = bad
    if isinstance(bad, bytes):
        src = tmp_path / "bad.jpg"
        src.write_bytes(bad)
        src = str(src)
    with pytest.raises(gr.Error, match=message):
        demo.handlers.caption(src, "tiny-a")
    with pytest.raises(gr.Error, match="No bundle named"):
        demo.handlers.caption(demo.example_paths[0], "nope")


@pytest.fixture(scope="module")
def server(setup):
    demo, _, _ = setup
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, show_error=True, quiet=True,
                allowed_paths=[os.path.dirname(p) for p in demo.example_paths])
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()


def test_api_through_gradio_client(server, tmp_path):
    from gradio_client import Client, handle_file

    demo, url = server
    client = Client(url, verbose=False)
    api = client.view_api(return_format="dict", print_info=False)
    assert {"/caption", "/compare", "/explain", "/card"} <= set(api["named_endpoints"])
    md, refs_md, details = client.predict(handle_file(demo.example_paths[0]), "tiny-a", "beam", 3, 0.0, 1.0, 0, 1.0,
                                          0, 12, 1, 0, api_name="/caption")
    assert details["captions"][0]["caption"] and "Reference captions" in refs_md
    table, _ = client.predict(handle_file(demo.example_paths[1]), "greedy", 3, 0.0, 1.0, 0, 1.0, 0, 12, 1, 0,
                              api_name="/compare")
    assert [r[0] for r in table["data"]] == ["tiny-a", "tiny-b"]
    bad = tmp_path / "truncated.jpg"
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buf, "JPEG")
    bad.write_bytes(buf.getvalue()[:200])
    with pytest.raises(Exception, match="can't be captioned"):
        client.predict(handle_file(str(bad)), "tiny-a", api_name="/caption")
    md, _, details = client.predict(handle_file(demo.example_paths[2]), "tiny-a", api_name="/caption")  # still serving
    assert details["captions"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)")
def test_real_browser_upload_and_caption(server, tmp_path):
    from playwright.sync_api import sync_playwright

    demo, url = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url)
        page.locator("input[type=file]").first.set_input_files(demo.example_paths[0])
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Caption", exact=True).click()
        page.get_by_text("Reference captions").wait_for(timeout=30000)
        heading = page.locator("h3").first.inner_text()
        assert heading.strip()
        page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
        browser.close()
    assert (tmp_path / "app.png").stat().st_size > 10_000


def test_a_caption_does_not_wait_for_a_slow_reference_index(setup, monkeypatch, tmp_path):
    """While the index builds (a first start), lookup gives up after `wait` seconds instead of
    holding the caption; once built, the same photo is found."""
    import threading
    import time

    _, data, _ = setup
    release = threading.Event()
    original = app.References._cached_hashes

    def slow(self, examples):
        release.wait(30)
        return original(self, examples)

    monkeypatch.setattr(app.References, "_cached_hashes", slow)
    refs = app.References(data, 3, cache_dir=str(tmp_path))
    img = Image.open(refs.examples[0]).convert("RGB")
    t = time.perf_counter()
    assert refs.lookup(img, wait=0.2) is None
    assert time.perf_counter() - t < 2
    release.set()
    assert refs.ready.wait(30)
    assert refs.lookup(img) is not None
