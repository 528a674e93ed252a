"""Latency of the app's caption API through gradio_client, on 127.0.0.1.

    .venv/bin/python benchmarks/bench_app.py [--requests 40] [--clients 1 8] [--bundle NAME] [--precision float32]

Starts the app in a subprocess with the bundled weights (``app.py``'s page plus one no-op endpoint,
``/noop``, that takes the same photo upload and returns its size: what serving costs without the model),
waits until it answers, sends requests with a photo (a Flickr8k test photo when ../shared/data is
present, else a scikit-image photo), and prints, for each number of concurrent clients, p50 / p95 latency
and requests/s of ``/caption``; with one client also ``/noop`` (interleaved with ``/caption``) and the
library's own caption time inside the app (encode + decode, from the answers' details).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def photo() -> str:
    data = os.path.join(os.path.dirname(ROOT), "shared", "data", "flickr8k")
    test = os.path.join(data, "Flickr_8k.testImages.txt")
    if os.path.exists(test):
        with open(test) as f:
            return os.path.join(data, "Images", f.readline().strip())
    import skimage.data
    from PIL import Image

    path = os.path.join(tempfile.mkdtemp(), "chelsea.png")
    Image.fromarray(skimage.data.chelsea()).save(path)
    return path


SERVE_WITH_NOOP = """
import sys
sys.argv[0] = "app.py"
import app, gradio as gr
from PIL import Image
args = app.parser().parse_args(sys.argv[1:])
demo = app.build_demo(app.config_from_args(args))
with demo:  # the same upload as /caption, no model: what the server itself costs
    photo, size = gr.Image(type="filepath", visible=False), gr.JSON(visible=False)
    gr.Button(visible=False).click(lambda p: list(Image.open(p).size), photo, size, api_name="noop")
app.launch(demo, args)
"""


def start_app(port: int, queue_size: int, precision: str | None = None) -> subprocess.Popen:
    extra = ["--encoder-option", f"precision={precision}"] if precision else []
    proc = subprocess.Popen([sys.executable, "-c", SERVE_WITH_NOOP, "--port", str(port),
                             "--queue-size", str(queue_size), *extra], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the app did not start within 180 s")


def measure(url: str, image: str, bundle: str | None, clients: int, requests: int) -> dict:
    from gradio_client import Client, handle_file

    pool = [Client(url, verbose=False) for _ in range(clients)]
    args = (handle_file(image),) + ((bundle,) if bundle else ())  # no bundle: the app's default
    library: list[float] = []

    def one(i: int) -> float:
        t = time.perf_counter()
        details = pool[i % clients].predict(*args, api_name="/caption")[2]
        ms = (time.perf_counter() - t) * 1000
        library.append(details["encode_ms"] + details["decode_ms"])
        return ms

    def noop(i: int) -> float:
        t = time.perf_counter()
        pool[i % clients].predict(handle_file(image), api_name="/noop")
        return (time.perf_counter() - t) * 1000

    for i in range(clients * 2):  # warm-up
        one(i)
        noop(i)
    library.clear()
    out = {"clients": clients, "requests": requests}
    if clients == 1:  # the overhead comparison: /caption and /noop in turn
        lat, base = [], []
        for i in range(requests):
            lat.append(one(i))
            base.append(noop(i))
        out.update(caption_p50_interleaved_ms=round(float(np.percentile(lat, 50)), 1),
                   noop_p50_ms=round(float(np.percentile(base, 50)), 1),
                   library_p50_ms=round(float(np.percentile(library, 50)), 1))
        out["overhead_bound_ms"] = round(out["noop_p50_ms"] + 1.25 * out["library_p50_ms"], 1)
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as ex:
        lat = list(ex.map(one, range(requests)))
    wall = time.perf_counter() - t0
    out.update(p50_ms=round(float(np.percentile(lat, 50)), 1), p95_ms=round(float(np.percentile(lat, 95)), 1),
               requests_per_s=round(requests / wall, 2))
    if clients == 1:
        out["within_bound"] = out["caption_p50_interleaved_ms"] <= out["overhead_bound_ms"]
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    p.add_argument("--bundle", default=None, help="bundle name (default: the app's default)")
    p.add_argument("--precision", choices=("auto", "float32", "bfloat16"), help="the encoders' arithmetic "
                   "(default: the app's, auto)")
    args = p.parse_args()
    port = free_port()
    proc = start_app(port, queue_size=64, precision=args.precision)
    try:
        image = photo()
        results = [measure(f"http://127.0.0.1:{port}/", image, args.bundle, c, args.requests) for c in args.clients]
    finally:
        proc.terminate()
        proc.wait(30)
    for r in results:
        r["precision"] = args.precision or "auto"
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
