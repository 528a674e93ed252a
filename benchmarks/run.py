"""All benchmarks in one command; results to benchmarks/RESULTS.md (and results.json).

    .venv/bin/python benchmarks/run.py [--quick]

Each figure is measured side by side, in the same run, against the classic tutorial pipeline in
``benchmarks/classic.py``, with the same vocabulary, sizes and features. Medians of repeats.
Needs the Flickr8k folder (../shared/data/flickr8k) and the bundle weights/efficientnet_lite0-flickr8k.
"""

from __future__ import annotations

import argparse
import dataclasses
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


SECTIONS = ["features", "training", "latency", "decoding", "app", "memory", "coldstart"]


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the classic side and ours are compared at. The output layer dominates both sides of the training
    and captioning comparisons and grows with the vocabulary, so each comparison runs at both."""

    name: str  # 'project' or 'seed'
    encoder: str  # the encoder whose features are used (its feature extraction is compared too)
    min_count: int  # vocabulary: words seen fewer times in the train captions are dropped
    max_length: int  # tokens per caption, <start> and <end> included
    feature_dim: int  # D
    note: str  # where the settings come from


SETTINGS = {
    "project": Settings("project", "efficientnet_lite0", 5, 32, 1280,
                        "this project's bundle: vocabulary min count 5, 32 tokens, EfficientNet-Lite0 features"),
    "seed": Settings("seed", "xception", 1, 38, 2048,
                     "the seed notebook's: every word of the train captions, 38 tokens, Xception's 2048-d features"),
}


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, run in turn within every repeat: a machine whose speed drifts
    over minutes (a shared VM) then slows both sides of a ratio alike."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_features(n: int, repeats: int) -> list[dict]:
    """Images/s, classic per-image loop vs ours, float32 and 'auto' precision (bfloat16 where native).

    Two measurements: the model alone on decoded, resized arrays; and from the JPEG files, where the
    classic loop reads each photo before its predict and ours is training's ``extract_features``
    (decoding in threads ahead of the batched encoder, features written to a fresh cache).
    """
    import tempfile

    import classic

    from caption_core.encoders import build_encoder
    from caption_core.encoders.efficientnet_lite import build_efficientnet_lite
    from caption_core.images import load_image
    from training.datasets import load_captions
    from training.features import extract_features

    rows = []
    for name, cfg, n in (("xception", {}, n), ("efficientnet_lite0", {}, 4 * n)):  # ImageNet weights; ~10 s a repeat
        examples = load_captions(DATA, "test")[:n]
        paths = [e.image for e in examples]
        variants = {"float32": {"precision": "float32"}, "auto": {"precision": "auto"}}
        if name == "efficientnet_lite0":
            variants["compiled"] = {"precision": "auto", "compile": True}
        ours = {v: build_encoder(name, {**cfg, **opts}) for v, opts in variants.items()}
        size = ours["float32"].input_size
        t0 = time.perf_counter()
        imgs = [ours["float32"].preprocess([load_image(p)])[0] for p in paths]  # (S, S, 3) uint8 each
        decode_ms = (time.perf_counter() - t0) / n * 1000
        batch = np.stack(imgs)  # (N, S, S, 3)
        direct = None
        if name == "xception":  # the plain Keras model (float32): predict per image, and called directly
            model = build_encoder(name, {**cfg, "precision": "float32", "backend": "keras"}).model
            one = lambda img: classic.extract_one_by_one_keras(model, [img], lambda x: x / 127.5 - 1.0)
            direct = lambda img: np.asarray(model(img[None].astype("float32") / 127.5 - 1.0, training=False))[0]
        else:  # a plain torch model: default NCHW memory format, float32 (a forward call: torch has no predict)
            model = build_efficientnet_lite("package", 0)
            one = lambda img: classic.extract_one_by_one_torch(model, [img])
        classic_arrays = lambda: [one(img) for img in imgs]
        classic_files = lambda: [one(classic.load_img(p, size)) for p in paths]

        def ours_files(enc):
            with tempfile.TemporaryDirectory() as tmp:
                return extract_features(enc, examples, DATA, "test", cache_root=tmp, progress=False)

        row = {"encoder": name, "settings": "seed" if name == "xception" else "project", "images": n,
               "precision_auto": ours["auto"].precision, "decode_ms": round(decode_ms, 2),
               "classic_call": "predict" if name == "xception" else "forward"}
        for v, enc in ours.items():
            t = time.perf_counter()
            enc.encode_arrays(batch[:8])  # warm-up (and, for 'compiled', the one-off torch.compile)
            row[f"warmup_{v}_s"] = round(time.perf_counter() - t, 1)
        classic_arrays()
        for where, classic_fn, ours_fn in (("arrays", classic_arrays, lambda e: e.encode_arrays(batch)),
                                            ("files", classic_files, ours_files)):
            fns = {"classic": classic_fn, **{v: (lambda enc=enc: ours_fn(enc)) for v, enc in ours.items()}}
            if direct is not None and where == "arrays":
                direct(imgs[0])
                fns["classic_direct"] = lambda: [direct(img) for img in imgs]
            t = interleaved(fns, repeats)
            if "classic_direct" in t:
                row["arrays_classic_direct_img_s"] = round(n / t["classic_direct"], 1)
                row["arrays_float32_ratio_vs_direct"] = round(t["classic_direct"] / t["float32"], 2)
            row[f"{where}_classic_img_s"] = round(n / t["classic"], 1)
            for v in ours:
                row[f"{where}_{v}_img_s"] = round(n / t[v], 1)
                row[f"{where}_{v}_ratio"] = round(t["classic"] / t[v], 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def keras_conv_macs(model) -> int:
    """Multiply-adds of one image through a Keras model's convolutions (batch 1)."""
    from keras import layers

    total = 0
    for layer in model.layers:
        if not isinstance(layer, (layers.Conv2D, layers.SeparableConv2D, layers.DepthwiseConv2D)):
            continue
        _, h, w, c_out = layer.output.shape
        c_in = layer.input.shape[-1]
        kh, kw = layer.kernel_size
        if isinstance(layer, layers.SeparableConv2D):
            total += h * w * c_in * kh * kw + h * w * c_in * c_out
        elif isinstance(layer, layers.DepthwiseConv2D):
            total += h * w * c_out * kh * kw
        else:
            total += h * w * c_out * c_in * kh * kw // layer.groups
    return int(total)


def torch_conv_macs(module, x) -> int:
    import torch

    total = [0]

    def hook(m, _, out):
        total[0] += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    hooks = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        module.extract_features(x)
    for h in hooks:
        h.remove()
    return int(total[0])


def bench_roofline(features: list[dict]) -> dict:
    """What bounds extraction: each model's multiply-adds per image, and the machine's GEMM rate
    (a 2048x2048 matmul, float32 and bfloat16), against the rates measured in section 1."""
    import keras
    import torch

    from caption_core.encoders.efficientnet_lite import build_efficientnet_lite

    from caption_core.encoders.base import cpu_has_native_bf16

    gemm = {}
    # bfloat16 only where the CPU multiplies it natively: elsewhere torch emulates it (minutes per matmul)
    # and no encoder runs it ('auto' resolves to float32)
    for name, dtype in (("float32", torch.float32),) + ((("bfloat16", torch.bfloat16),) if cpu_has_native_bf16() else ()):
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        t = interleaved({"matmul": lambda: a @ b}, 7)["matmul"]
        gemm[name] = round(2048 ** 3 / t / 1e9, 1)
    macs = {"xception": keras_conv_macs(keras.applications.Xception(include_top=False, weights=None,
                                                                   input_shape=(299, 299, 3))),
            "efficientnet_lite0": torch_conv_macs(build_efficientnet_lite("random", 0), torch.zeros(1, 3, 224, 224))}
    rows = []
    for x in features:
        g = macs[x["encoder"]] / 1e9
        for label, key, prec in (("classic", "arrays_classic_img_s", "float32"), ("ours float32", "arrays_float32_img_s", "float32"),
                                 ("ours auto", "arrays_auto_img_s", x["precision_auto"])):
            rate = x[key] * g
            rows.append({"encoder": x["encoder"], "run": label, "gmac_per_image": round(g, 3),
                         "gmac_s": round(rate, 1), "percent_of_gemm": round(100 * rate / gemm[prec], 1), "gemm": prec})
    return {"gemm_gmac_s": gemm, "rows": rows}


def load_bundle_and_features():
    from caption_core.captioner import Captioner
    from training.datasets import load_captions
    from training.features import extract_features

    cap = Captioner.from_bundle(BUNDLE)
    data = {s: load_captions(DATA, s) for s in ("train", "dev", "test")}
    feats = {s: extract_features(cap.encoder, data[s], DATA, s, os.path.join(ROOT, "cache"), progress=False)
             for s in data}
    return cap, data, feats


def setting_parts(st: Settings, cap, data, feats):
    """(vocabulary, decoder config, train features, dev features) at settings ``st``. Project: the bundle's
    vocabulary, decoder and cached EfficientNet-Lite0 features. Seed: a vocabulary of every train word, 38
    tokens, and the real ImageNet Xception features (float32, from the feature cache; extracted there first
    when missing)."""
    from caption_core.text import Vocabulary, clean_caption

    if st.name == "project":
        return cap.vocab, cap.decoder.config, np.asarray(feats["train"][0], np.float32), \
            np.asarray(feats["dev"][0], np.float32)
    vocab = Vocabulary.build([clean_caption(c) for e in data["train"] for c in e.captions], min_count=st.min_count)
    config = dataclasses.replace(cap.decoder.config, vocab_size=len(vocab), feature_dim=st.feature_dim,
                                 max_length=st.max_length)
    from caption_core.encoders import build_encoder
    from training.features import extract_features

    xception = build_encoder(st.encoder, {"precision": "float32"})
    train, dev = (np.asarray(extract_features(xception, data[s], DATA, s, os.path.join(ROOT, "cache"), progress=False)[0],
                             np.float32) for s in ("train", "dev"))
    return vocab, config, train, dev


def bench_training(st: Settings, cap, data, feats, photos: int, classic_images: int, repeats: int) -> dict:
    """Captions/s at settings ``st``: our epoch over the captions of the first ``photos`` train photos vs the
    classic generator on its first ``classic_images`` photos (5 captions each), in turn, ``repeats`` times;
    medians. Our epoch is reported without and with its dev-split evaluation and checkpoint save."""
    import tempfile

    import classic

    from caption_core.text import clean_caption
    from training.train_decoder import DecoderTrainConfig, DecoderTrainer, caption_rows

    vocab, dcfg, train_feats, dev_feats = setting_parts(st, cap, data, feats)
    cfg = DecoderTrainConfig(out="", decoder=dcfg)
    valid = np.ones(len(data["train"]), bool)
    valid[photos:] = False
    idx, caps = caption_rows(data["train"], valid, vocab, dcfg.max_length)
    dev_idx, dev_caps = caption_rows(data["dev"], np.ones(len(data["dev"]), bool), vocab, dcfg.max_length)
    trainer = DecoderTrainer(cfg, vocab, train_feats.shape[1])
    trainer.run_epoch(train_feats, idx[:2000], caps[:2000], np.random.default_rng(0))  # trace
    trainer.evaluate(dev_feats, dev_idx[:500], dev_caps[:500])

    L = dcfg.max_length
    model = classic.build_classic_model(len(vocab), train_feats.shape[1], L, dcfg.units, dcfg.embed_dim)
    subset = {i: [clean_caption(c) for c in data["train"][i].captions] for i in range(classic_images)}
    model.fit(classic.data_generator(subset, train_feats, vocab, L), steps_per_epoch=5, epochs=1, verbose=0)  # trace
    tmp = tempfile.mkdtemp()
    t = interleaved({
        "ours": lambda: trainer.run_epoch(train_feats, idx, caps, np.random.default_rng(1)),
        "ours_dev_and_checkpoint": lambda: (trainer.evaluate(dev_feats, dev_idx, dev_caps),
                                            trainer.save_checkpoint(os.path.join(tmp, "last.keras"))),
        "classic": lambda: model.fit(classic.data_generator(subset, train_feats, vocab, L, images_per_batch=1),
                                     steps_per_epoch=classic_images, epochs=1, verbose=0),
    }, repeats)
    ours, classic_rate = len(caps) / t["ours"], classic_images * 5 / t["classic"]
    full = len(caps) / (t["ours"] + t["ours_dev_and_checkpoint"] * len(caps) / 30000)  # dev + save: once per 30,000
    return {"settings": st.name, "vocabulary": len(vocab), "max_length": L, "feature_dim": int(train_feats.shape[1]),
            "captions": int(len(caps)), "ours_epoch_s": round(t["ours"], 1), "ours_captions_s": round(ours, 1),
            "dev_and_checkpoint_s": round(t["ours_dev_and_checkpoint"], 1),
            "ours_captions_s_with_dev": round(full, 1),
            "classic_captions_s": round(classic_rate, 1), "classic_epoch_s_projected": round(30000 / classic_rate, 1),
            "ratio": round(ours / classic_rate, 1), "ratio_with_dev": round(full / classic_rate, 1), "repeats": repeats}


def bench_latency(st: Settings, cap, data, feats, n: int, repeats: int) -> dict:
    """Greedy captioning of one photo at settings ``st``: ours (the NumPy decoder, state carried) against the
    seed's loop with ``predict()`` and the same loop calling the model directly, on the same ``n`` test
    photos, interleaved photo by photo, ``repeats`` times; the per-photo medians, the per-photo ratios, and
    the median ratio with its spread. The classic model gets our decoder's weights (trained at the project's
    settings, random at the seed's), so both loops caption with the same model."""
    import classic

    from caption_core.captioner import Captioner
    from caption_core.decoders import MergeDecoder

    vocab, dcfg, _, _ = setting_parts(st, cap, data, feats)
    if st.name == "project":
        ours, test = cap, np.asarray(feats["test"][0], np.float32)
    else:
        ours = Captioner(cap.encoder, MergeDecoder(dcfg), vocab, {"default_decoding": {"strategy": "greedy"}})
        test = np.random.default_rng(1).normal(0, 1, (n, st.feature_dim)).astype(np.float32)
    L = dcfg.max_length
    words = L - 1  # both sides stop at <end> or after this many words
    model = classic.build_classic_model(len(vocab), test.shape[1], L, dcfg.units, dcfg.embed_dim)
    classic.copy_weights_from(model, ours.decoder)
    fns = {"ours": lambda i: ours.decode(test[i:i + 1], "greedy", max_length=words, ban_unknown=False),
           "classic_predict": lambda i: classic.generate_desc(model, vocab, test[i], L, words, call="predict"),
           "classic_direct": lambda i: classic.generate_desc(model, vocab, test[i], L, words, call="direct")}
    for fn in fns.values():
        fn(0)
    times = {k: [[] for _ in range(n)] for k in fns}
    for _ in range(repeats):
        for i in range(n):
            for k, fn in fns.items():
                t = time.perf_counter()
                fn(i)
                times[k][i].append((time.perf_counter() - t) * 1000)
    med = {k: [statistics.median(x) for x in v] for k, v in times.items()}  # per photo
    same, lengths = 0, []
    for i in range(n):
        text = classic.generate_desc(model, vocab, test[i], L, words, call="direct")
        mine = ours.decode(test[i:i + 1], "greedy", max_length=words, ban_unknown=False)[0][0]
        theirs = [w for w in text.split()[1:] if w != "<end>"]
        same += " ".join(theirs) == mine.text
        lengths.append(len(mine.tokens))
    out = {"settings": st.name, "vocabulary": len(vocab), "max_length": L, "photos": n, "repeats": repeats,
           "same_captions": f"{same}/{n}", "mean_steps": round(float(np.mean(lengths)), 1)}
    for k, v in med.items():
        out[f"{k}_p50_ms"] = round(statistics.median(v), 2)
    for k in ("classic_predict", "classic_direct"):
        ratios = [c / o for c, o in zip(med[k], med["ours"])]
        out[f"{k}_ratio_median"] = round(statistics.median(ratios), 1)
        out[f"{k}_ratio_min"], out[f"{k}_ratio_max"] = round(min(ratios), 1), round(max(ratios), 1)
    print(json.dumps(out), flush=True)
    return out


def bench_decoding(data, n: int, repeats: int) -> list[dict]:
    """Per photo, for each precision path: the encode time (load the file, preprocess, EfficientNet-Lite0)
    and the decode times of the bundle's default (beam) decoding and of greedy, as ``Captioner.caption``
    reports them, ``repeats`` times in turn; the per-photo medians, their ratios, and the median ratio over
    ``n`` test photos with its spread. Then beam decoding of the whole test split from cached features."""
    from caption_core.captioner import Captioner
    from training.features import extract_features

    out = []
    for precision in ("float32", "auto"):
        cap = Captioner.from_bundle(BUNDLE, {"precision": precision})
        photos = [e.image for e in data["test"][:n]]
        cap.caption(photos[0])
        cap.caption(photos[0], "greedy")
        enc, beam, greedy = [], [], []
        for path in photos:
            e, b, g = [], [], []
            for _ in range(repeats):
                r = cap.caption(path)[0]
                e.append(r.encode_ms)
                b.append(r.decode_ms)
                g.append(cap.caption(path, "greedy")[0].decode_ms)
            enc.append(statistics.median(e))
            beam.append(statistics.median(b))
            greedy.append(statistics.median(g))
        ratio = [b / e for b, e in zip(beam, enc)]
        feats, valid = extract_features(cap.encoder, data["test"], DATA, "test", os.path.join(ROOT, "cache"),
                                        progress=False)
        test = np.asarray(feats, np.float32)[valid]
        cap.decode(test[:250])
        t = time.perf_counter()
        for b in range(0, len(test), 250):
            cap.decode(test[b:b + 250])
        split_s = time.perf_counter() - t
        p = lambda xs, q: round(float(np.percentile(xs, q)), 2)
        out.append({"precision": precision, "resolved": cap.encoder.precision, "photos": n, "repeats": repeats,
                    "default": f"{cap.default_strategy} {cap.default_options}", "encode_p50_ms": p(enc, 50),
                    "beam_p50_ms": p(beam, 50), "beam_p95_ms": p(beam, 95), "greedy_p50_ms": p(greedy, 50),
                    "beam_over_encode_median": round(statistics.median(ratio), 3),
                    "beam_over_encode_min": round(min(ratio), 3), "beam_over_encode_max": round(max(ratio), 3),
                    "greedy_over_encode_median": round(statistics.median([g / e for g, e in zip(greedy, enc)]), 3),
                    "test_split_images": int(len(test)), "test_split_beam_s": round(split_s, 2)})
        print(json.dumps(out[-1]), flush=True)
    return out


def bench_app(requests: int, precision: str | None = None) -> list[dict]:
    extra = ["--precision", precision] if precision else []
    out = subprocess.run([sys.executable, os.path.join(HERE, "bench_app.py"), "--requests", str(requests),
                          "--clients", "1", "8", *extra], capture_output=True, text=True, timeout=1200)
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
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS),
                   help="compare training and captioning at these settings (default: both, side by side): "
                        + "; ".join(f"{k}: {v.note}" for k, v in SETTINGS.items()))
    p.add_argument("--only", choices=SECTIONS, nargs="+", help="run these sections, print them, write nothing")
    p.add_argument("--compare", help="coldstart: also start another checkout's app.py (e.g. the previous main), "
                   "interleaved, in the same run")
    p.add_argument("--cold-start-json", help="coldstart: take the results of an earlier "
                   "`benchmarks/cold_start.py --json FILE` run instead of measuring again")
    p.add_argument("--keep", choices=SECTIONS, nargs="+", default=[],
                   help="take these sections from the existing results.json instead of measuring them again "
                        "(RESULTS.md says which, with their date)")
    args = p.parse_args()
    q = args.quick
    from training.common import machine

    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "cpu_flags": cpu_flags()}
    wanted = [x for x in (args.only or SECTIONS) if x not in args.keep]
    if args.keep:
        with open(os.path.join(HERE, "results.json")) as f:
            previous = json.load(f)
        keys = {"features": ("features", "roofline")}
        for section in args.keep:
            for key in keys.get(section, (section,)):
                results[key] = previous[key]
        earlier = previous.get("kept", {})
        results["kept"] = {section: earlier.get(section, previous["date"]) for section in args.keep}  # section -> date
    if "features" in wanted:
        results["features"] = bench_features(16 if q else 64, 1 if q else 3)
        results["roofline"] = bench_roofline(results["features"])
        print(json.dumps(results["roofline"]), flush=True)
    if {"training", "latency", "decoding"} & set(wanted):
        cap, data, feats = load_bundle_and_features()
        chosen = [SETTINGS[x] for x in args.settings]
        if "training" in wanted:
            results["training"] = [bench_training(st, cap, data, feats, 400 if q else 2000, 10 if q else 100,
                                                  1 if q else 3) for st in chosen]
            print(json.dumps(results["training"]), flush=True)
        if "latency" in wanted:
            results["latency"] = [bench_latency(st, cap, data, feats, 4 if q else 20, 2 if q else 5) for st in chosen]
        if "decoding" in wanted:
            results["decoding"] = bench_decoding(data, 5 if q else 20, 1 if q else 3)
    if "app" in wanted:
        results["app"] = bench_app(10 if q else 40) + bench_app(10 if q else 40, "float32")
        print(json.dumps(results["app"]), flush=True)
    if "memory" in wanted:
        results["memory"] = bench_memory()
        print(json.dumps(results["memory"]), flush=True)
    if "coldstart" in wanted:
        if args.cold_start_json:
            with open(args.cold_start_json) as f:
                results["coldstart"] = json.load(f)
        else:
            out = os.path.join(HERE, "cold_start.json")
            cmd = [sys.executable, os.path.join(HERE, "cold_start.py"), "--starts", "1" if q else "3", "--json", out]
            subprocess.run(cmd + (["--compare", args.compare] if args.compare else []), check=True, timeout=3600)
            with open(out) as f:
                results["coldstart"] = json.load(f)
    if args.only:
        return
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    write_markdown(results)


def cpu_flags() -> str:
    """The SIMD features that decide the arithmetic paths: AVX2, AVX-512, native bfloat16."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return "unknown"
    names = [("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512_BF16"), ("amx_bf16", "AMX-BF16")]
    return ", ".join(f"{label} {'yes' if flag in flags else 'no'}" for flag, label in names)


def yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def write_markdown(r: dict) -> None:
    m = r["machine"]
    lines = ["# Benchmark results", "",
             f"Measured {r['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, no GPU "
             f"(Python {m['python']}); CPU flags: {r.get('cpu_flags', '?')}. Command: `.venv/bin/python benchmarks/run.py`.",
             "'auto' precision is bfloat16 only where the CPU multiplies bf16 natively; elsewhere it is the float32 "
             "path, and the tables say which it resolved to."
             + (" Kept from earlier runs on the same machine (`--keep`): "
                + ", ".join(f"{k} ({v})" for k, v in r["kept"].items()) + "." if r.get("kept") else ""), "",
             "## 1. Feature extraction (images/s)", "",
             f"The first {r['features'][0]['images']} (Xception) or {r['features'][1]['images']} (EfficientNet-Lite0) "
             "Flickr8k test photos, medians of 3 repeats. Classic: one `predict` "
             "(Keras) or forward pass (plain torch model, NCHW) per image, float32. Ours: batched, "
             "EfficientNet-Lite0 channels-last; Xception as a frozen graph; 'auto' precision is bfloat16 "
             "on CPUs with native bf16 arithmetic (AVX512_BF16 or AMX), else float32; 'compiled' adds "
             "`torch.compile` (its one-off compile time is not in the rate: see below).", "",
             "Both sides in float32 is the like-for-like comparison (the 'ours float32' ratio); 'auto' is an extra "
             "column. Xception is the seed notebook's encoder (its settings), EfficientNet-Lite0 the project's. For "
             "Xception the classic loop is also run calling the Keras model directly instead of `predict()`.", "",
             "| settings | encoder | input | classic | ours float32 | ratio (float32 vs float32) | ours auto | ratio | ours auto, compiled | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["features"]:
        for where, label in (("arrays", "decoded arrays (model only)"), ("files", "JPEG files")):
            compiled = (f"{x[where + '_compiled_img_s']} | {x[where + '_compiled_ratio']}x"
                        if where + "_compiled_img_s" in x else "- | -")
            lines.append(f"| {x.get('settings', '-')} | {x['encoder']} | {label} | {x[where + '_classic_img_s']} | "
                         f"{x[where + '_float32_img_s']} | "
                         f"{x[where + '_float32_ratio']}x | {x[where + '_auto_img_s']} ({x['precision_auto']}) | "
                         f"{x[where + '_auto_ratio']}x | {compiled} |")
            if where == "arrays" and "arrays_classic_direct_img_s" in x:
                lines.append(f"| {x.get('settings', '-')} | {x['encoder']} | {label}, classic calling the model directly | "
                             f"{x['arrays_classic_direct_img_s']} | {x['arrays_float32_img_s']} | "
                             f"{x['arrays_float32_ratio_vs_direct']}x | | | | |")
    lines += ["", "Warm-up (first batch of 8, seconds): " + "; ".join(
        f"{x['encoder']} " + ", ".join(f"{k[7:-2]} {v}" for k, v in x.items() if k.startswith("warmup_"))
        for x in r["features"]) + "."]
    ro = r["roofline"]
    lines += ["", "### What bounds extraction", "",
              f"This machine's 2048x2048 matmul (torch, all cores): {ro['gemm_gmac_s']['float32']} GMAC/s float32"
              + (f", {ro['gemm_gmac_s']['bfloat16']} GMAC/s bfloat16" if "bfloat16" in ro["gemm_gmac_s"] else
                 " (no native bfloat16 here)") + ". Multiply-adds per image counted over the convolutions; "
              "rate = images/s (model only) x multiply-adds.", "",
              "| encoder | run | GMAC / image | GMAC/s | % of the matmul rate (same precision) |", "|---|---|---|---|---|"]
    lines += [f"| {x['encoder']} | {x['run']} | {x['gmac_per_image']} | {x['gmac_s']} | {x['percent_of_gemm']}% ({x['gemm']}) |"
              for x in ro["rows"]]
    by = {(x["encoder"], x["run"]): x for x in ro["rows"]}
    lines.append("")
    for x in r["features"]:
        enc, f32, auto = x["encoder"], by[(x["encoder"], "ours float32")], by[(x["encoder"], "ours auto")]
        per_image_ms = 1000 / x["arrays_auto_img_s"]  # both cores busy in the encoder
        serial, shared = 1000 / (per_image_ms + x["decode_ms"]), 1000 / (per_image_ms + x["decode_ms"] / 2)
        lines += [f"- {enc}: batched float32 runs at {f32['percent_of_gemm']}% of the float32 matmul rate and "
                  f"{x['precision_auto']} at {auto['percent_of_gemm']}% of its own. Reading a photo (decode + resize) "
                  f"costs {x['decode_ms']} ms of one core and competes with the encoder for the same cores: from files "
                  f"the rate is bounded by {serial:.0f} (decoding in turn with the encoder) to {shared:.0f} images/s "
                  f"(decoding spread over both cores); measured {x['files_auto_img_s']}."]
    lines += ["", "## 2. Decoder training over the Flickr8k train split features", "",
              "Medians of the repeats, each side in turn. Ours: whole epochs over the captions of the first "
              "train photos (length-sorted batches, masked loss); its dev-split evaluation and checkpoint save are "
              "timed apart and, in the 'with dev' columns, added once per 30,000 captions (a full epoch). Classic: "
              "the prefix generator with one-hot targets. Seed settings train on random 2048-d features (the time "
              "does not depend on their values).", "",
              "| settings | vocabulary | tokens | D | ours captions/s | with dev + checkpoint | classic captions/s | "
              "classic epoch (30,000 captions) | ratio | ratio with dev |", "|---|---|---|---|---|---|---|---|---|---|"]
    for t in r["training"]:
        lines.append(f"| {t['settings']} | {t['vocabulary']} | {t['max_length']} | {t['feature_dim']} | "
                     f"{t['ours_captions_s']} | {t['ours_captions_s_with_dev']} | {t['classic_captions_s']} | "
                     f"{t['classic_epoch_s_projected']} s | {t['ratio']}x | {t['ratio_with_dev']}x |")
    lines += ["", "## 3. Greedy captioning after encoding (ms, one photo)", "",
              "The same photos, interleaved photo by photo, each side timed repeats times; per-photo medians; the "
              "ratio is classic / ours for the same photo: its median over the photos [min, max]. 'predict' is the "
              "seed's loop as it is (one `model.predict()` per word); 'direct' is the same loop calling the model "
              "directly, so the difference between the two is `predict()`'s fixed cost per call, and what remains is "
              "the algorithm (the whole prefix re-read each word, the vocabulary scan) against ours (state carried, "
              "one step per word). At the seed's settings the decoder is untrained (random weights, the same on both "
              "sides), so captions run to the length limit.", "",
              "| settings | vocabulary | photos x repeats | ours p50 | classic predict p50 | ratio | classic direct p50 | ratio | same captions | steps per caption |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for la in r["latency"]:
        lines.append(f"| {la['settings']} | {la['vocabulary']} | {la['photos']} x {la['repeats']} | {la['ours_p50_ms']} | "
                     f"{la['classic_predict_p50_ms']} | {la['classic_predict_ratio_median']}x "
                     f"[{la['classic_predict_ratio_min']}, {la['classic_predict_ratio_max']}] | {la['classic_direct_p50_ms']} | "
                     f"{la['classic_direct_ratio_median']}x [{la['classic_direct_ratio_min']}, {la['classic_direct_ratio_max']}] | "
                     f"{la['same_captions']} | {la['mean_steps']} |")
    lines += ["",
              "### Decoding against encoding, one photo at a time", "",
              f"The first {r['decoding'][0]['photos']} Flickr8k test photos, each captioned {r['decoding'][0]['repeats']} "
              "times in turn with the bundle's default decoding and with greedy; times as `Captioner.caption` reports "
              "them (encode: read the file, preprocess, EfficientNet-Lite0; decode: the strategy from the features). "
              "Per-photo medians; the ratio is decode / encode of the same photo, its median over the photos "
              "[min, max]. Last column: the whole test split decoded with the default beam from cached features, "
              "250 photos per call.", "",
              "| precision | encode p50 ms | beam p50 ms | greedy p50 ms | beam / encode | greedy / encode | 1,000 test photos, beam |",
              "|---|---|---|---|---|---|---|"]
    for d in r["decoding"]:
        lines.append(f"| {d['precision']} ({d['resolved']}) | {d['encode_p50_ms']} | {d['beam_p50_ms']} | "
                     f"{d['greedy_p50_ms']} | {d['beam_over_encode_median']} [{d['beam_over_encode_min']}, "
                     f"{d['beam_over_encode_max']}] | {d['greedy_over_encode_median']} | {d['test_split_beam_s']} s |")
    lines += ["", f"Default decoding: {r['decoding'][0]['default']}.", "",
              "## 4. App API (`gradio_client`, default bundle, 127.0.0.1)", "",
              "With one client, `/caption` and a no-op endpoint (`/noop`: the same photo upload, no model) are "
              "sent in turn; 'library' is the encode + decode time the app's own answers report.", "",
              "| precision | clients | p50 ms | p95 ms | requests/s | no-op p50 ms | library p50 ms | bound: no-op + 1.25 x library |",
              "|---|---|---|---|---|---|---|---|"]
    for a in r["app"]:
        one = a["clients"] == 1
        lines.append(f"| {a['precision']} | {a['clients']} | {a['caption_p50_interleaved_ms'] if one else a['p50_ms']} | "
                     f"{a['p95_ms']} | {a['requests_per_s']} | {a.get('noop_p50_ms', '-')} | {a.get('library_p50_ms', '-')} | "
                     f"{a.get('overhead_bound_ms', '-')} |")
    lines += ["", "## 5. Memory", "", f"Peak resident memory of the app with every shipped bundle loaded "
              f"({', '.join(r['memory']['bundles'])}): {r['memory']['peak_rss_mib']} MiB.", ""]
    cs = r.get("coldstart")
    if cs:
        lines += ["## 6. Cold start (`benchmarks/cold_start.py`)", "",
                  f"Measured {cs['date']}. Each module imported alone in a fresh interpreter, seconds: " +
                  ", ".join(f"{k} {v}" for k, v in cs.get("imports_s", {}).items()) + ".", ""]
        if cs.get("bundles"):
            lines += ["Each bundle loaded alone in a fresh interpreter (`Captioner.from_bundle`, then a first caption):", "",
                      "| bundle | load s | first caption s | imports TensorFlow | imports torch |", "|---|---|---|---|---|"]
            lines += [f"| {b} | {x['load_s']:.2f} | {x['first_caption_s']:.2f} | {x['tensorflow']} | {x['torch']} |"
                      for b, x in cs["bundles"].items()]
            lines.append("")
        lines += ["`python app.py` started cold, medians of the starts: launch -> the page answers; then a first "
                  "/caption sent at once (the client's connection, then the request until its answer); resident "
                  "memory after that caption (default bundle loaded) and after a /compare (every bundle loaded). "
                  "'before' is the previous main's app.py, started in turn with this one.", "",
                  "| setting | code | page s | connect s | first caption s | RSS after it MiB | RSS all bundles MiB |",
                  "|---|---|---|---|---|---|---|"]
        for setting, by in cs["app"].items():
            for code, x in by.items():
                label = "this" if code == "this" else "before"
                lines.append(f"| {setting} | {label} | {x['page_s']} | {x.get('connect_s', '-')} | {x['first_caption_s']} | "
                             f"{x.get('rss_after_first_caption_mib', '-')} | {x['rss_mib']} |")
        lines.append("")
    lines += ["## Against the targets", "", "| target | measured | met |", "|---|---|---|"]
    for x in r["features"]:
        ratios = [x["arrays_auto_ratio"], x["files_auto_ratio"]]
        lines.append(f"| {x['encoder']} extraction >= 3x the per-image loop | {x['arrays_auto_ratio']}x model only, "
                     f"{x['files_auto_ratio']}x from JPEG files ({x['precision_auto']}); float32: "
                     f"{x['arrays_float32_ratio']}x, {x['files_float32_ratio']}x | {yes(min(ratios) >= 3)} |")
    for t in r["training"]:
        lines.append(f"| decoder training >= 20x the classic generator, {t['settings']} settings | {t['ratio']}x "
                     f"({t['ratio_with_dev']}x with dev + checkpoint) | {yes(t['ratio'] >= 20)} |")
    for la in r["latency"]:
        lines.append(f"| greedy caption >= 150x the classic loop (predict), {la['settings']} settings | "
                     f"{la['classic_predict_ratio_median']}x (direct call: {la['classic_direct_ratio_median']}x) | "
                     f"{yes(la['classic_predict_ratio_median'] >= 150)} |")
    for d in r["decoding"]:
        lines.append(f"| default beam decode <= 0.5x the encode of the same photo, {d['precision']} ({d['resolved']}) | "
                     f"{d['beam_over_encode_median']}x (median of {d['photos']}) | {yes(d['beam_over_encode_median'] <= 0.5)} |")
    lines.append(f"| the 1,000 test photos decoded with the default beam in seconds | {r['decoding'][0]['test_split_beam_s']} s | "
                 f"{yes(r['decoding'][0]['test_split_beam_s'] < 60)} |")
    for a in (a for a in r["app"] if a["clients"] == 1):
        lines.append(f"| caption p50 <= no-op p50 + 1.25x library, {a['precision']} | {a['caption_p50_interleaved_ms']} <= "
                     f"{a['overhead_bound_ms']} ms | {yes(a['within_bound'])} |")
        lines.append(f"| one caption request < 300 ms p50 (1 client), {a['precision']} | {a['p50_ms']} ms | {yes(a['p50_ms'] < 300)} |")
    if cs and all("compare" in by for by in list(cs["app"].values())[:2]):
        for setting, by in list(cs["app"].items())[:2]:
            now, before = by["this"], by["compare"]
            lines.append(f"| cold start, {setting}: page <= 60% of before | {now['page_s']} s vs {before['page_s']} s "
                         f"({100 * now['page_s'] / before['page_s']:.0f}%) | {yes(now['page_s'] <= 0.6 * before['page_s'])} |")
    if cs:
        for setting, by in cs["app"].items():
            lines.append(f"| cold start, {setting}: first caption within 3 s of the page | {by['this']['first_caption_s']} s "
                         f"(+ {by['this'].get('connect_s', '?')} s connecting) | {yes(by['this']['first_caption_s'] <= 3)} |")
    lines.append("")
    with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
