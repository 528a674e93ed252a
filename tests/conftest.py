import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
if "CAPTION_CACHE" not in os.environ:  # tensors kept for fast loads go to a folder of this run, not ~/.cache
    import tempfile

    os.environ["CAPTION_CACHE"] = tempfile.mkdtemp(prefix="caption-cache-")

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("CAPTION_SHARED_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data"))


@pytest.fixture(scope="session")
def shared_data():
    if not os.path.isdir(os.path.join(SHARED_DATA, "flickr8k")):
        pytest.skip(f"real data not found at {SHARED_DATA} (set CAPTION_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_parts():
    """A tiny random vit_custom encoder, merge decoder and vocabulary: seeded, so that every run has the same ones (a
    random draw can leave two beams within float16 rounding of each other, and the round-trip test compares texts)."""
    import keras

    from caption_core.decoders import DecoderConfig, MergeDecoder
    from caption_core.encoders import build_encoder
    from caption_core.text import Vocabulary, clean_caption

    captions = ["A dog runs on the grass .", "A black cat sits on a mat", "Two dogs play in the snow",
                "A man rides a bike", "A girl in a red dress jumps"]
    vocab = Vocabulary.build([clean_caption(c) for c in captions])
    keras.utils.set_random_seed(0)
    enc = build_encoder("vit_custom", {"dim": 32, "depth": 1, "heads": 2, "mlp_dim": 64, "drop_path": 0.0})
    cfg = DecoderConfig(vocab_size=len(vocab), feature_dim=32, embed_dim=16, units=16, max_length=12)
    return enc, MergeDecoder(cfg), vocab


@pytest.fixture()
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory, tiny_parts):
    """The app on one tiny bundle ('tiny'), no dataset, served on a free local port: its URL."""
    os.environ["CAPTION_APP_NO_DEMO"] = "1"
    import app
    from caption_core.bundle import save_bundle
    from helpers import free_port

    root = tmp_path_factory.mktemp("served")
    enc, dec, vocab = tiny_parts
    save_bundle(str(root / "weights" / "tiny"), encoder=enc, decoder=dec, vocab=vocab)
    demo = app.build_demo(app.AppConfig(weights_dir=str(root / "weights"), data_dir=None, concurrency=2, queue_size=40))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, show_error=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def app_setup(tmp_path_factory, tiny_parts):
    """The page on two tiny bundles and a small Flickr-layout folder: (demo, data folder, root)."""
    os.environ["CAPTION_APP_NO_DEMO"] = "1"
    import app
    from caption_core.bundle import save_bundle
    from helpers import make_flickr

    root = tmp_path_factory.mktemp("app")
    data = make_flickr(root / "flickr", per_split=(6, 3, 4), bad=False)
    enc, dec, vocab = tiny_parts
    for name in ("tiny-a", "tiny-b"):
        save_bundle(str(root / "weights" / name), encoder=enc, decoder=dec, vocab=vocab,
                    metrics={"flickr/test": {"beam": {"BLEU-4": 0.1, "CIDEr": 0.2}}}, card=f"# {name}\n")
    from caption_core.bundle import BASELINE_FORMAT

    (root / "weights" / "blind.json").write_text(json.dumps({
        "format": BASELINE_FORMAT, "name": "blind", "default_decoding": {"strategy": "greedy"},
        "metrics": {"flickr/test": {"greedy": {"BLEU-4": 0.05, "CIDEr": 0.07}}}}))
    cfg = app.AppConfig(weights_dir=str(root / "weights"), data_dir=data, n_examples=3, cache_dir=str(root / "cache"))
    demo = app.build_demo(cfg)
    demo.service.refs.ready.wait(30)
    return demo, data, root
