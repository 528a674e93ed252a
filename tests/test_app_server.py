"""The app served: its API through gradio_client, and the page in a real browser."""

import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from helpers import free_port


@pytest.fixture(scope="module")
def server(app_setup):
    demo, _, _ = app_setup
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
    md, refs_md, details = client.predict(handle_file(demo.example_paths[0]), "tiny-a", "beam",
                                          {"beam_width": 3, "max_length": 12}, api_name="/caption")
    assert details["captions"][0]["caption"] and "Reference captions" in refs_md
    assert details["options"]["beam_width"] == 3 and details["options"]["max_length"] == 12
    table, _ = client.predict(handle_file(demo.example_paths[1]), "greedy", {"max_length": 12}, api_name="/compare")
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
        page.get_by_text("Reference captions", exact=True).wait_for(timeout=30000)  # the caption's, not the header's words
        heading = page.locator("h3").first.inner_text()
        assert heading.strip()
        page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
        browser.close()
    assert (tmp_path / "app.png").stat().st_size > 10_000


