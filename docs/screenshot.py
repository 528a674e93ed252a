"""Take the README's screenshot of the page: the app on the bundled weights, one photo captioned with the default
bundle, the detector's boxes drawn, in Debian's chromium driven by playwright (no browser download).

    .venv/bin/python docs/screenshot.py [PHOTO] [--out docs/screenshot.png]

PHOTO defaults to scikit-image's cat (public domain: a dataset's photos are not ours to publish). The PNG is reduced
to a palette to stay small.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photo", nargs="?")
    p.add_argument("--out", default=os.path.join(HERE, "screenshot.png"))
    p.add_argument("--port", type=int, default=7871)
    args = p.parse_args()
    sys.path.insert(0, ROOT)
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from caption_core.serving import fallback_examples

    # a photo free to publish (scikit-image ships it: public domain), not a dataset's
    photo = args.photo or next(x for x in fallback_examples() if x.endswith("chelsea.png"))
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("Debian's chromium is not installed: apt-get install chromium")
    env = {**os.environ, "GRADIO_SERVER_PORT": str(args.port), "HF_HUB_OFFLINE": "1"}
    # no dataset folder: the page shows the free example photos, not a dataset's
    proc = subprocess.Popen([sys.executable, "app.py", "--data-dir", ""], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                               "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            for _ in range(120):
                try:
                    page.goto(f"http://127.0.0.1:{args.port}/")
                    break
                except Exception:
                    time.sleep(1)
            page.locator("input[type=file]").first.set_input_files(photo)
            page.wait_for_timeout(1500)
            for _ in range(2):  # the second caption's timings are a warm page's
                page.get_by_role("button", name="Caption", exact=True).click()
                page.get_by_text("What the detector sees:").first.wait_for(timeout=120000)
                page.wait_for_timeout(2500)
            page.screenshot(path=args.out, full_page=False)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
    Image.open(args.out).convert("RGB").quantize(colors=192).save(args.out, optimize=True)
    print(f"{args.out}: {os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
