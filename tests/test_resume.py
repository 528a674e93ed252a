"""kill -9 during feature extraction and during training, then resume: the same result as one run."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


KILL_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
    from caption_core.encoders import build_encoder
    from training.datasets import load_captions
    from training.features import extract_features
    from training.train_decoder import DecoderTrainConfig, train_decoder
    from caption_core.decoders import DecoderConfig
    enc = build_encoder("vit_custom", {{"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32, "stem": "linear", "batch_size": 1}})
    enc.model.set_weights([w * 0 + 0.01 * (i + 1) for i, w in enumerate(enc.model.get_weights())])  # same weights every run
    data, cache, out = sys.argv[1], sys.argv[2], sys.argv[3]
    ex = {{s: load_captions(data, s) for s in ("train", "dev")}}
    feats = {{s: extract_features(enc, ex[s], data, s, cache, progress=False) for s in ex}}
    print("FEATURES DONE", flush=True)
    cfg = DecoderTrainConfig(out=out, epochs=int(sys.argv[4]), batch_size=4, min_count=1, patience=50,
                             decoder=DecoderConfig(embed_dim=8, units=8))
    state = train_decoder(cfg, ex["train"], *feats["train"], ex["dev"], *feats["dev"], resume=True)
    print("LOSSES", [h["train_loss"] for h in state["history"]], flush=True)
""")


def _run_until(args, predicate, timeout=120):
    """Start a process, SIGKILL it as soon as predicate() holds."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if predicate():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.05)
    proc.wait()
    return False


def test_kill_minus_nine_then_resume_matches_an_uninterrupted_run(tmp_path):
    import json

    from helpers import make_flickr

    data = make_flickr(tmp_path / "flickr", per_split=(40, 6, 2), bad=False)
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(root=ROOT, tests=os.path.join(ROOT, "tests")))
    cache, out = str(tmp_path / "cache"), str(tmp_path / "run")

    def index_done():
        for d, _, fs in os.walk(cache):
            if "index.json" in fs and "train" in d:
                try:
                    return 0 < json.load(open(os.path.join(d, "index.json")))["done"] < 40
                except (ValueError, OSError):
                    return False
        return False

    assert _run_until([sys.executable, str(script), data, cache, out, "6"], index_done), "no kill during extraction"

    def two_epochs():
        try:
            return json.load(open(os.path.join(out, "state.json")))["epochs_done"] >= 2
        except (ValueError, OSError):
            return False

    assert _run_until([sys.executable, str(script), data, cache, out, "6"], two_epochs), "no kill during training"
    resumed = subprocess.run([sys.executable, str(script), data, cache, out, "6"], capture_output=True, text=True, timeout=300)
    straight = subprocess.run([sys.executable, str(script), data, str(tmp_path / "cache2"), str(tmp_path / "run2"), "6"],
                              capture_output=True, text=True, timeout=300)
    get = lambda p: json.loads(p.stdout.split("LOSSES", 1)[1].strip().replace("'", '"'))
    a, b = get(resumed), get(straight)
    assert len(a) == len(b) == 6
    np.testing.assert_allclose(a, b, rtol=1e-3)
    f1 = [np.load(os.path.join(d, "features.npy")) for d, _, fs in sorted(os.walk(cache)) if "features.npy" in fs]
    f2 = [np.load(os.path.join(d, "features.npy")) for d, _, fs in sorted(os.walk(str(tmp_path / "cache2"))) if "features.npy" in fs]
    for x, y in zip(f1, f2):
        np.testing.assert_allclose(x, y, atol=1e-5)
