"""All benchmarks in one command; results to benchmarks/RESULTS.md (and results.json).

    .venv/bin/python benchmarks/run.py [--quick]

Each figure is measured side by side, in the same run, against the classic tutorial pipeline in
``benchmarks/classic.py``, with the same vocabulary, sizes and features. Medians of repeats.
Needs the Flickr8k folder (../shared/data/flickr8k) and the bundle weights/efficientnet_lite0-flickr8k.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "flickr8k")
BUNDLE = os.path.join(ROOT, "weights", "efficientnet_lite0-flickr8k")


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def bench_features(n: int, repeats: int) -> list[dict]:
    import classic

    from caption_core.encoders import build_encoder
    from caption_core.images import load_image
    from training.datasets import load_captions

    examples = load_captions(DATA, "test")[:n]
    rows = []
    for name, cfg in (("xception", {"weights": None}), ("efficientnet_lite0", {})):
        enc = build_encoder(name, cfg)
        imgs = [enc.preprocess([load_image(e.image)])[0] for e in examples]  # (S, S, 3) uint8 each
        batch = np.stack(imgs)
        if name == "xception":
            classic_fn = lambda: classic.extract_one_by_one_keras(enc.model, imgs, lambda x: x / 127.5 - 1.0)
        else:
            classic_fn = lambda: classic.extract_one_by_one_torch(enc.model, imgs, enc.to_tensor)
        enc.encode_arrays(batch[:8])
        classic_fn()  # warm-up both
        t_ours, _ = timed(lambda: enc.encode_arrays(batch), repeats)
        t_classic, _ = timed(classic_fn, repeats)
        rows.append({"encoder": name, "images": n, "ours_img_s": round(n / t_ours, 1),
                     "classic_img_s": round(n / t_classic, 1), "ratio": round(t_classic / t_ours, 2)})
    return rows


def load_bundle_and_features():
    from caption_core.captioner import Captioner
    from training.datasets import load_captions
    from training.features import extract_features

    cap = Captioner.from_bundle(BUNDLE)
    data = {s: load_captions(DATA, s) for s in ("train", "dev", "test")}
    feats = {s: extract_features(cap.encoder, data[s], DATA, s, os.path.join(ROOT, "cache"), progress=False)
             for s in data}
    return cap, data, feats


def bench_training(cap, data, feats, classic_images: int) -> dict:
    import classic

    from caption_core.text import clean_caption
    from training.train_decoder import DecoderTrainConfig, DecoderTrainer, caption_rows

    cfg = DecoderTrainConfig(out="", **{k: cap.decoder.config.to_dict()[k] for k in ("embed_dim", "units", "max_length")})
    train_feats, valid = np.asarray(feats["train"][0], np.float32), feats["train"][1]
    idx, caps = caption_rows(data["train"], valid, cap.vocab, cfg.max_length)
    trainer = DecoderTrainer(cfg, cap.vocab, train_feats.shape[1])
    trainer.run_epoch(train_feats, idx[:2000], caps[:2000], np.random.default_rng(0))  # trace
    seconds, (loss, epoch_s) = timed(lambda: trainer.run_epoch(train_feats, idx, caps, np.random.default_rng(1)), 1)
    ours = len(caps) / epoch_s

    L = cfg.max_length
    model = classic.build_classic_model(len(cap.vocab), train_feats.shape[1], L, cfg.units, cfg.embed_dim)
    subset = {i: [clean_caption(c) for c in data["train"][i].captions] for i in range(classic_images)}
    gen = classic.data_generator(subset, train_feats, cap.vocab, L, images_per_batch=1)
    model.fit(gen, steps_per_epoch=5, epochs=1, verbose=0)  # trace
    gen = classic.data_generator(subset, train_feats, cap.vocab, L, images_per_batch=1)
    t = time.perf_counter()
    model.fit(gen, steps_per_epoch=classic_images, epochs=1, verbose=0)
    classic_s = time.perf_counter() - t
    classic_rate = classic_images * 5 / classic_s
    return {"captions": int(len(caps)), "ours_epoch_s": round(epoch_s, 1), "ours_captions_s": round(ours, 1),
            "classic_captions_s": round(classic_rate, 1), "classic_epoch_s_projected": round(len(caps) / classic_rate, 1),
            "ratio": round(ours / classic_rate, 1)}


def bench_latency(cap, data, feats, n: int, classic_n: int) -> dict:
    import classic


    test = np.asarray(feats["test"][0], np.float32)
    lat = {}
    for strategy, opts in (("greedy", {}), ("beam", {"beam_width": 3})):
        cap.decode(test[:1], strategy, **opts)
        times = []
        for i in range(n):
            t = time.perf_counter()
            cap.decode(test[i:i + 1], strategy, **opts)
            times.append((time.perf_counter() - t) * 1000)
        lat[strategy] = times
    L = cap.decoder.config.max_length
    model = classic.build_classic_model(len(cap.vocab), test.shape[1], L)
    classic.copy_weights_from(model, cap.decoder)  # the same trained model on both sides
    classic.generate_desc(model, cap.vocab, test[0], L, 3)
    times, same = [], 0
    for i in range(classic_n):
        t = time.perf_counter()
        text = classic.generate_desc(model, cap.vocab, test[i], L, cap.default_options.max_length)
        times.append((time.perf_counter() - t) * 1000)
        words = [w for w in text.split()[1:] if w != "<end>"]
        same += " ".join(words) == cap.decode(test[i:i + 1], "greedy")[0][0].text
    pct = lambda xs, q: round(float(np.percentile(xs, q)), 2)
    return {"greedy_p50_ms": pct(lat["greedy"], 50), "greedy_p95_ms": pct(lat["greedy"], 95),
            "beam3_p50_ms": pct(lat["beam"], 50), "beam3_p95_ms": pct(lat["beam"], 95),
            "classic_greedy_p50_ms": pct(times, 50), "classic_greedy_p95_ms": pct(times, 95),
            "ratio_greedy_p50": round(float(np.percentile(times, 50) / np.percentile(lat["greedy"], 50)), 1),
            "images": n, "classic_images": classic_n, "same_captions": f"{same}/{classic_n}"}


def bench_app(requests: int) -> list[dict]:
    out = subprocess.run([sys.executable, os.path.join(HERE, "bench_app.py"), "--requests", str(requests),
                          "--clients", "1", "8"], capture_output=True, text=True, timeout=1200)
    return json.loads(out.stdout[out.stdout.index("["):])


def bench_memory() -> dict:
    """Peak resident memory of the app after every shipped bundle has captioned a photo."""

    from bench_app import free_port, photo, start_app
    from gradio_client import Client, handle_file

    port = free_port()
    proc = start_app(port, 16)
    try:
        Client(f"http://127.0.0.1:{port}/", verbose=False).predict(handle_file(photo()), api_name="/compare")
        with open(f"/proc/{proc.pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        return {"peak_rss_mib": round(int(status["VmHWM"].split()[0]) / 1024, 1),
                "bundles": sorted(os.listdir(os.path.join(ROOT, "weights")))}
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = p.parse_args()
    q = args.quick
    from training.common import machine

    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    results["features"] = bench_features(16 if q else 64, 1 if q else 3)
    print(json.dumps(results["features"]), flush=True)
    cap, data, feats = load_bundle_and_features()
    results["training"] = bench_training(cap, data, feats, 10 if q else 100)
    print(json.dumps(results["training"]), flush=True)
    results["latency"] = bench_latency(cap, data, feats, 20 if q else 100, 5 if q else 20)
    print(json.dumps(results["latency"]), flush=True)
    results["app"] = bench_app(10 if q else 40)
    print(json.dumps(results["app"]), flush=True)
    results["memory"] = bench_memory()
    print(json.dumps(results["memory"]), flush=True)
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    write_markdown(results)


def write_markdown(r: dict) -> None:
    m = r["machine"]
    lines = ["# Benchmark results", "",
             f"Measured {r['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, no GPU "
             f"(Python {m['python']}). Command: `.venv/bin/python benchmarks/run.py`.", "",
             "## 1. Feature extraction (images/s)", "", "| encoder | ours (batched) | classic (per-image predict) | ratio |",
             "|---|---|---|---|"]
    lines += [f"| {x['encoder']} | {x['ours_img_s']} | {x['classic_img_s']} | {x['ratio']}x |" for x in r["features"]]
    t = r["training"]
    lines += ["", "## 2. Decoder training over the Flickr8k train split features", "",
              f"Ours: {t['ours_captions_s']} captions/s, {t['ours_epoch_s']} s per epoch ({t['captions']} captions). "
              f"Classic prefix generator with one-hot targets: {t['classic_captions_s']} captions/s "
              f"(an epoch would take {t['classic_epoch_s_projected']} s). Ratio: {t['ratio']}x.", "",
              "## 3. Caption latency after encoding (ms, one image)", "",
              "| | p50 | p95 |", "|---|---|---|"]
    la = r["latency"]
    lines += [f"| ours greedy | {la['greedy_p50_ms']} | {la['greedy_p95_ms']} |",
              f"| ours beam-3 | {la['beam3_p50_ms']} | {la['beam3_p95_ms']} |",
              f"| classic greedy loop | {la['classic_greedy_p50_ms']} | {la['classic_greedy_p95_ms']} |", "",
              f"Greedy is {la['ratio_greedy_p50']}x faster than the classic loop at the median; with our trained "
              f"weights copied into the classic model, both loops wrote the same caption for {la['same_captions']} photos.", "",
              "## 4. App API (`gradio_client`, default bundle, 127.0.0.1)", "",
              "| clients | p50 ms | p95 ms | requests/s |", "|---|---|---|---|"]
    lines += [f"| {a['clients']} | {a['p50_ms']} | {a['p95_ms']} | {a['requests_per_s']} |" for a in r["app"]]
    lines += ["", "## 5. Memory", "", f"Peak resident memory of the app with every shipped bundle loaded "
              f"({', '.join(r['memory']['bundles'])}): {r['memory']['peak_rss_mib']} MiB.", ""]
    with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
