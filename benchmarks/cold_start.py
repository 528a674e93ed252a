"""Where a cold start goes, and how long the first visitor waits.

    .venv/bin/python benchmarks/cold_start.py [--starts 3] [--compare PATH_TO_OTHER_CHECKOUT] [--json OUT]

1. Imports: each heavy module imported alone in a fresh interpreter (median of ``--starts``).
2. Bundles: in one fresh interpreter per bundle, the time to load it (``Captioner.from_bundle``) and to
   caption a first photo, and which frameworks that pulled in.
3. The app: ``app.py`` started ``--starts`` times (each a cold process) with a Flickr8k folder when
   ``../shared`` has one, and without (a Space); per start: launch -> the page answers, then a first
   /caption request sent at once (the client's connection, then the request's own wall time until its
   answer), the resident memory then (the default bundle loaded) and once every bundle has answered a
   /compare. With ``--compare``, the same for another checkout's ``app.py`` in
   the same run (today's code against a change), starts interleaved.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from training.common import write_json  # noqa: E402
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "flickr8k")
MODULES = ["numpy", "PIL", "h5py", "gradio", "torch", "transformers", "tensorflow", "keras"]


def import_seconds(module: str, python: str = sys.executable) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return float(out.stdout.strip().splitlines()[-1])


BUNDLE_CODE = """
import json, sys, time
t0 = time.perf_counter()
from caption_core.captioner import Captioner
import numpy as np
t1 = time.perf_counter()
cap = Captioner.from_bundle(sys.argv[1])
t2 = time.perf_counter()
cap.caption(np.full((64, 64, 3), 128, np.uint8))
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_caption_s": t3 - t2,
                  "tensorflow": "tensorflow" in sys.modules, "torch": "torch" in sys.modules,
                  "keras": "keras" in sys.modules}))
"""


def bundle_seconds(bundle: str, cwd: str = ROOT) -> dict:
    out = subprocess.run([sys.executable, "-c", BUNDLE_CODE, bundle], capture_output=True, text=True, cwd=cwd,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def children(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (Linux)."""
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            continue
        for k in kids:
            out += [k, *children(k)]
    return out


def tree_rss_mib(pid: int) -> tuple[float, float]:
    """(resident memory of ``pid`` and every process it started, the part of it in those children), MiB: the
    app and its head-start process."""
    own, kids = rss_mib(pid)[0], 0.0
    for k in children(pid):
        try:
            kids += rss_mib(k)[0]
        except (OSError, KeyError):  # exited meanwhile
            pass
    return own + kids, kids


def photo() -> str:
    test = os.path.join(DATA, "Flickr_8k.testImages.txt")
    if os.path.exists(test):
        with open(test) as f:
            return os.path.join(DATA, "Images", f.readline().strip())
    import skimage.data
    from PIL import Image

    path = os.path.join("/tmp", "cold-start-chelsea.png")
    Image.fromarray(skimage.data.chelsea()).save(path)
    return path


@contextlib.contextmanager
def cold_app(app_dir: str, data_dir: str | None, extra: list[str]):
    """``app.py`` of ``app_dir`` started in a fresh process -> (process, its URL, seconds until the page
    answered); terminated on exit."""
    port = free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, os.path.join(app_dir, "app.py"), "--port", str(port), *extra, "--data-dir", data_dir or ""]
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=app_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{app_dir}/app.py exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
            if time.perf_counter() - t0 > 300:
                raise RuntimeError("the page did not answer within 300 s")
        yield proc, url, time.perf_counter() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def one_start(app_dir: str, data_dir: str | None, extra: list[str]) -> dict:
    """Start app.py cold; time until the page answers, then a first caption sent at once."""
    from gradio_client import Client, handle_file

    with cold_app(app_dir, data_dir, extra) as (proc, url, page_s):
        t1 = time.perf_counter()
        client = Client(url, verbose=False)  # what a page load does too: the app's config and API
        t2 = time.perf_counter()
        details = client.predict(handle_file(photo()), api_name="/caption")[2]
        t3 = time.perf_counter()
        rss_first, _ = tree_rss_mib(proc.pid)  # the app and its head-start process, if any
        client.predict(handle_file(photo()), api_name="/compare")  # every bundle loaded and used
        rss, peak = rss_mib(proc.pid)
        return {"page_s": round(page_s, 2), "connect_s": round(t2 - t1, 2), "first_caption_s": round(t3 - t2, 2),
                "first_caption_text": details["captions"][0]["caption"], "references": bool(details["references"]),
                "rss_after_first_caption_mib": round(rss_first, 1), "rss_mib": round(rss, 1),
                "peak_rss_mib": round(peak, 1)}


def medians(runs: list[dict], digits: int = 2) -> dict:
    """The median of each numeric field over ``runs`` (flags and texts left out)."""
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {k: round(statistics.median(r[k] for r in runs), digits) for k in keys}


def settings_summary(runs: dict[str, list[dict]], digits: int = 2) -> dict:
    """{setting: {"median": its medians, "runs": its runs}}, each setting's medians printed."""
    out = {}
    for name, rs in runs.items():
        out[name] = {"median": medians(rs, digits), "runs": rs}
        print(name, "median", json.dumps(out[name]["median"]), flush=True)
    return out


def median_of(runs: list[dict]) -> dict:
    return medians(runs) | {"runs": runs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--starts", type=int, default=3, help="cold starts per setting (default: %(default)s)")
    p.add_argument("--compare", help="another checkout whose app.py is measured in the same run (e.g. today's main)")
    p.add_argument("--json", help="write the results here too")
    p.add_argument("--skip-imports", action="store_true")
    args = p.parse_args(argv)
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if not args.skip_imports:
        result["imports_s"] = {m: round(statistics.median(import_seconds(m) for _ in range(args.starts)), 2)
                               for m in MODULES}
        print(json.dumps(result["imports_s"]), flush=True)
        weights = os.path.join(ROOT, "weights")
        result["bundles"] = {b: bundle_seconds(os.path.join(weights, b)) for b in sorted(os.listdir(weights))}
        print(json.dumps(result["bundles"]), flush=True)
    checkouts = {"this": ROOT, **({"compare": os.path.abspath(args.compare)} if args.compare else {})}
    settings = {"data, auto": (DATA if os.path.isdir(DATA) else None, []),
                "no data (a Space), auto": (None, []),
                "data, float32": (DATA if os.path.isdir(DATA) else None, ["--encoder-option", "precision=float32"])}
    result["app"] = {}
    for setting, (data_dir, extra) in settings.items():
        runs: dict[str, list] = {k: [] for k in checkouts}
        for _ in range(args.starts):
            for name, folder in checkouts.items():  # interleaved: drift slows both alike
                if extra and name == "compare" and not supports_encoder_option(folder):
                    continue
                runs[name].append(one_start(folder, data_dir, extra))
        result["app"][setting] = {k: median_of(v) for k, v in runs.items() if v}
        print(setting, json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "runs"}
                                   for k, v in result["app"][setting].items()}), flush=True)
    if args.json:
        write_json(args.json, result)
    return 0


def supports_encoder_option(folder: str) -> bool:
    with open(os.path.join(folder, "app.py"), encoding="utf-8") as f:
        return "--encoder-option" in f.read()


if __name__ == "__main__":
    sys.exit(main())
