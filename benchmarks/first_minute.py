"""The first minute of the app, as one visitor lives it: how soon the first caption comes, and whether the
captions of the next 15 s are slowed by loading the visitor did not ask for.

    .venv/bin/python benchmarks/first_minute.py [--starts 2] [--compare OTHER_CHECKOUT] [--preload default all]
                                                [--head-start on off] [--window 15] [--precision float32] [--json OUT]

Per start (a cold ``app.py`` process, with the Flickr8k folder when ../shared has one):

1. launch -> the page answers (``GET /`` is 200): ``page_s``;
2. at once one client (gradio_client) sends ``/caption`` with the same photo and the default bundle, again
   and again, one request at a time: ``first_caption_s`` is the page's answer -> the first caption's answer
   (the client's connection included: a browser loads the config too);
3. the captions answered in the ``--window`` seconds after the first: their p50 / p95 (``first_window``);
4. then one ``/compare`` (every bundle loaded and used), 3 s of rest, and another ``--window`` seconds of the
   same requests: the p50 once everything is loaded (``loaded``); ``ratio`` = first-window p50 / loaded p50;
5. resident memory after the first caption (the app and its head-start process together, and the latter's
   part) and once every bundle is loaded, and the app's own peak.

``--preload`` runs this checkout's app with each ``--preload`` policy (an app without that flag runs once);
``--compare`` runs another checkout's ``app.py`` in the same run, starts interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from cold_start import DATA, ROOT, cold_app, photo, rss_mib, settings_summary, tree_rss_mib, write_json


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))] if s else float("nan")


def requests_for(client, image, seconds: float) -> list[float]:
    """Send /caption back to back for ``seconds``: the latencies (s)."""
    from gradio_client import handle_file

    out, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        client.predict(handle_file(image), api_name="/caption")
        out.append(time.perf_counter() - t)
    return out


def one_start(app_dir: str, extra: list[str], window: float, precision: str) -> dict:
    from gradio_client import Client, handle_file

    image = photo()
    extra = [*extra, "--encoder-option", f"precision={precision}"]
    with cold_app(app_dir, DATA if os.path.isdir(DATA) else None, extra) as (proc, url, page_s):
        t_page = time.perf_counter()
        client = Client(url, verbose=False)
        details = client.predict(handle_file(image), api_name="/caption")[2]
        first = time.perf_counter() - t_page
        rss_first, rss_children = tree_rss_mib(proc.pid)  # the app and its head-start process, if it has one
        early = requests_for(client, image, window)
        client.predict(handle_file(image), api_name="/compare")
        time.sleep(3)
        loaded = requests_for(client, image, window)
        _, peak = rss_mib(proc.pid)
        p50_early, p50_loaded = statistics.median(early), statistics.median(loaded)
        return {"page_s": round(page_s, 2), "first_caption_s": round(first, 2),
                "launch_to_first_caption_s": round(page_s + first, 2),
                "first_has_cider": "CIDEr" in details["captions"][0],
                "first_window_p50_ms": round(1000 * p50_early, 1),
                "first_window_p95_ms": round(1000 * percentile(early, 0.95), 1),
                "first_window_max_ms": round(1000 * max(early), 1), "first_window_n": len(early),
                "loaded_p50_ms": round(1000 * p50_loaded, 1), "loaded_p95_ms": round(1000 * percentile(loaded, 0.95), 1),
                "loaded_n": len(loaded), "ratio": round(p50_early / p50_loaded, 2),
                "rss_after_first_caption_mib": round(rss_first, 1),
                "head_start_rss_after_first_caption_mib": round(rss_children, 1),
                "rss_all_loaded_mib": round(tree_rss_mib(proc.pid)[0], 1),
                "peak_rss_mib": round(peak, 1)}


def supports(folder: str, flag: str) -> bool:
    with open(os.path.join(folder, "app.py"), encoding="utf-8") as f:
        return flag in f.read()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--starts", type=int, default=2, help="cold starts per setting (default: %(default)s)")
    p.add_argument("--window", type=float, default=15.0, help="seconds of requests per window (default: %(default)s)")
    p.add_argument("--preload", nargs="*", default=["default", "all"], help="this checkout's policies to run")
    p.add_argument("--head-start", nargs="*", default=["on"], choices=("on", "off"),
                   help="this checkout's app with its head-start process, without, or both (default: on)")
    p.add_argument("--compare", help="another checkout whose app.py runs in the same run (e.g. an older main)")
    p.add_argument("--precision", default="float32", choices=("float32", "auto"),
                   help="the encoders' arithmetic in every app (default: %(default)s, the path every machine has)")
    p.add_argument("--json", help="write the results here too")
    args = p.parse_args(argv)
    settings: dict[str, tuple[str, list[str]]] = {}
    policies = args.preload if supports(ROOT, "--preload") else [None]
    heads = args.head_start if supports(ROOT, "--head-start") else [None]
    for pol in policies:
        for head in heads:
            extra = [*(["--preload", pol] if pol else []), *([f"--{'' if head == 'on' else 'no-'}head-start"] if head else [])]
            settings[" ".join(["this", *extra])] = (ROOT, extra)
    if args.compare:
        settings["compare"] = (os.path.abspath(args.compare), [])
    runs: dict[str, list] = {k: [] for k in settings}
    for _ in range(args.starts):
        for name, (folder, extra) in settings.items():  # interleaved: drift slows every setting alike
            r = one_start(folder, extra, args.window, args.precision)
            runs[name].append(r)
            print(name, json.dumps(r), flush=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "window_s": args.window,
              "precision": args.precision,
              "photo": os.path.basename(photo()), "data": os.path.isdir(DATA), "settings": settings_summary(runs)}
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
