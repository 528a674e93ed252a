import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

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
    """A tiny random vit_custom encoder, merge decoder and vocabulary."""
    from caption_core.decoder import DecoderConfig, MergeDecoder
    from caption_core.encoders import build_encoder
    from caption_core.text import Vocabulary, clean_caption

    captions = ["A dog runs on the grass .", "A black cat sits on a mat", "Two dogs play in the snow",
                "A man rides a bike", "A girl in a red dress jumps"]
    vocab = Vocabulary.build([clean_caption(c) for c in captions])
    enc = build_encoder("vit_custom", {"dim": 32, "depth": 1, "heads": 2, "mlp_dim": 64, "drop_path": 0.0})
    cfg = DecoderConfig(vocab_size=len(vocab), feature_dim=32, embed_dim=16, units=16, max_length=12)
    return enc, MergeDecoder(cfg), vocab


@pytest.fixture()
def rng():
    return np.random.default_rng(0)
