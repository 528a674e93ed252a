"""Latency of the app's caption API through gradio_client, on 127.0.0.1.

    .venv/bin/python benchmarks/bench_app.py [--requests 40] [--clients 1 8] [--bundle NAME]

Starts ``app.py`` in a subprocess with the bundled weights, waits until it answers, sends
requests with a photo (a Flickr8k test photo when ../shared/data is present, else a scikit-image
photo), and prints p50 / p95 latency and requests/s for each number of concurrent clients.
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


def start_app(port: int, queue_size: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "app.py"), "--port", str(port),
                             "--queue-size", str(queue_size)], cwd=ROOT,
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

    def one(i: int) -> float:
        t = time.perf_counter()
        pool[i % clients].predict(*args, api_name="/caption")
        return (time.perf_counter() - t) * 1000

    for i in range(clients * 2):  # warm-up
        one(i)
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as ex:
        lat = list(ex.map(one, range(requests)))
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": requests, "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p95_ms": round(float(np.percentile(lat, 95)), 1), "requests_per_s": round(requests / wall, 2)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    p.add_argument("--bundle", default=None, help="bundle name (default: the app's default)")
    args = p.parse_args()
    port = free_port()
    proc = start_app(port, queue_size=64)
    try:
        image = photo()
        results = [measure(f"http://127.0.0.1:{port}/", image, args.bundle, c, args.requests) for c in args.clients]
    finally:
        proc.terminate()
        proc.wait(30)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
