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
    import app

    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **app.launch_options(demo))
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()


def test_api_through_gradio_client(server, tmp_path):
    from gradio_client import Client, handle_file

    demo, url = server
    client = Client(url, verbose=False)
    api = client.view_api(return_format="dict", print_info=False)
    assert {"/caption", "/compare", "/explain", "/card", "/status"} <= set(api["named_endpoints"])
    md, refs_md, details = client.predict(handle_file(demo.example_paths[0]), "tiny-a", "beam",
                                          {"beam_width": 3, "max_length": 12}, api_name="/caption")
    assert details["captions"][0]["caption"] and "Reference captions" in refs_md
    assert details["options"]["beam_width"] == 3 and details["options"]["max_length"] == 12
    table, _, compared = client.predict(handle_file(demo.example_paths[1]), "greedy", {"max_length": 12},
                                        api_name="/compare")
    assert [r["bundle"] for r in compared["rows"]] == ["tiny-a", "tiny-b"] and "<table" in table
    status = client.predict(api_name="/status")
    assert [b["state"] for b in status["bundles"]] == ["ready", "ready"] and status["references_ready"]
    bad = tmp_path / "truncated.jpg"
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buf, "JPEG")
    bad.write_bytes(buf.getvalue()[:200])
    with pytest.raises(Exception, match="can't be captioned"):
        client.predict(handle_file(str(bad)), "tiny-a", api_name="/caption")
    md, _, details = client.predict(handle_file(demo.example_paths[2]), "tiny-a", api_name="/caption")  # still serving
    assert details["captions"]


def test_the_server_serves_the_page_files_and_nothing_else(server, app_setup):
    """Through /gradio_api/file=: the example photos load; the dataset's caption file and split lists, a photo
    that is not an example, the app's source and system files are refused."""
    import urllib.error
    import urllib.request

    demo, url = server
    _, data, _ = app_setup

    def status(path):
        try:
            with urllib.request.urlopen(f"{url}gradio_api/file={os.path.abspath(path)}", timeout=10) as r:
                r.read()
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert status(demo.example_paths[0]) == 200
    examples = {os.path.abspath(p) for p in demo.example_paths}
    other = next(p for p in sorted(os.listdir(os.path.join(data, "Images")))
                 if os.path.abspath(os.path.join(data, "Images", p)) not in examples)
    app_py = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "app.py")
    for refused in (os.path.join(data, "Flickr8k.token.txt"), os.path.join(data, "Flickr_8k.trainImages.txt"),
                    os.path.join(data, "Images", other), app_py, "/etc/passwd"):
        assert status(refused) in (403, 404), refused


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
        from caption_core.detectors import shared_detector

        if shared_detector() is not None:  # the detector's boxes are drawn over the photo, labelled
            page.get_by_text("What the detector sees:").first.wait_for(timeout=30000)
        page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
        # Compare: a table on a wide screen; at a phone's 390 px every caption keeps a readable width
        page.get_by_role("button", name="Compare all encoders").click()
        page.locator("table.compare td.caption").first.wait_for(timeout=30000)
        assert page.locator("table.compare th").first.is_visible()
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(500)
        page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
        layout = page.evaluate("""() => {
            const t = document.querySelector('table.compare');
            const w = s => [...t.querySelectorAll(s)].filter(e => e.offsetParent).map(e => e.getBoundingClientRect().width);
            return {scroll: t.scrollWidth, client: t.parentElement.clientWidth, captions: w('td.caption'),
                    headers: w('th'), view: window.innerWidth};
        }""")
        assert layout["view"] == 390 and len(layout["captions"]) == 2, layout
        assert min(layout["captions"]) >= 250 and layout["scroll"] <= layout["client"] + 1, layout
        assert layout["headers"] == [], layout  # the headers fold into each row's labels
        browser.close()
    assert (tmp_path / "app.png").stat().st_size > 10_000
    if os.environ.get("CAPTION_SCREENSHOTS"):  # to look at them: CAPTION_SCREENSHOTS=folder make test
        for name in ("app.png", "phone.png"):
            shutil.copy(tmp_path / name, os.path.join(os.environ["CAPTION_SCREENSHOTS"], name))


