"""caption_core.serving without a web framework: bundles loaded lazily under their own locks, the preload
policies, readiness and status, memory figures, and the service's answers."""

import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

from caption_core.bundle import save_bundle
from caption_core.captioner import Captioner
from caption_core.references import ReferenceIndex
from caption_core.serving import BundlePool, CaptionService, ServiceConfig, ServingError
from helpers import make_flickr


@pytest.fixture(scope="module")
def weights(tmp_path_factory, tiny_parts):
    root = tmp_path_factory.mktemp("serving")
    enc, dec, vocab = tiny_parts
    for name in ("tiny-a", "tiny-b", "tiny-c"):
        save_bundle(str(root / "weights" / name), encoder=enc, decoder=dec, vocab=vocab)
    return str(root / "weights")


def test_config_round_trip_and_unknown_policy():
    cfg = ServiceConfig(weights_dir="w", preload="all", encoder_options={"precision": "float32"})
    assert ServiceConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown preload policy 'eager'; valid: \\['default', 'all', 'none'\\]"):
        ServiceConfig(preload="eager")


def test_default_policy_loads_the_default_alone_and_the_others_when_asked(weights):
    service = CaptionService(ServiceConfig(weights_dir=weights, preload="default", hub_examples=""))
    pool = service.bundles
    assert [r["state"] for r in pool.status()] == ["not loaded"] * 3
    service.start()
    deadline = time.time() + 60
    while not pool.is_ready("tiny-a") and time.time() < deadline:
        time.sleep(0.05)
    assert pool.is_ready("tiny-a")
    service.first_served.set()
    time.sleep(0.5)
    assert pool.state("tiny-b") == pool.state("tiny-c") == "not loaded"  # nobody asked for them
    answer = service.caption(np.zeros((24, 24, 3), np.uint8), "tiny-c", "greedy", {"max_length": 6})
    assert answer["captions"][0]["caption"] and pool.state("tiny-c") == "ready" and pool.state("tiny-b") == "not loaded"
    status = {r["bundle"]: r for r in pool.status()}
    assert status["tiny-c"]["load_s"] > 0 and status["tiny-b"]["load_s"] is None
    if os.path.exists("/proc/self/statm"):
        assert isinstance(status["tiny-c"]["memory_mib"], float)


def test_all_policy_loads_the_others_once_a_first_caption_was_served(weights):
    service = CaptionService(ServiceConfig(weights_dir=weights, preload="all", quiet_s=60, hub_examples=""))
    service.start()
    time.sleep(1.0)
    assert service.bundles.state("tiny-c") == "not loaded"  # waits for the first visitor
    service.caption(np.zeros((24, 24, 3), np.uint8), "tiny-a", "greedy")
    deadline = time.time() + 60
    while not all(service.bundles.is_ready(n) for n in service.bundles.names) and time.time() < deadline:
        time.sleep(0.05)
    assert all(service.bundles.is_ready(n) for n in service.bundles.names)


def test_a_request_waits_only_for_its_own_bundle(weights, monkeypatch):
    """While another bundle is loading, a loaded one answers at once; the status line names the one loading."""
    release = threading.Event()
    original = Captioner.from_bundle.__func__

    def slow_for_b(cls, ref, encoder_options=None, shared_encoders=None):
        if ref.endswith("tiny-b"):
            release.wait(30)
        return original(cls, ref, encoder_options, shared_encoders)

    monkeypatch.setattr(Captioner, "from_bundle", classmethod(slow_for_b))
    pool = BundlePool(weights)
    pool.get("tiny-a")
    loading = threading.Thread(target=pool.get, args=("tiny-b",))
    loading.start()
    try:
        deadline = time.time() + 10
        while pool.state("tiny-b") != "loading" and time.time() < deadline:
            time.sleep(0.01)
        assert "tiny-b" in pool.status_line() and "tiny-a" not in pool.status_line()
        t = time.perf_counter()
        assert pool.get("tiny-a").caption(np.zeros((20, 20, 3), np.uint8))[0].captions
        assert time.perf_counter() - t < 5  # not behind tiny-b's load
    finally:
        release.set()
        loading.join(60)
    assert pool.status_line() == "" and pool.is_ready("tiny-b")


def test_unknown_bundle_and_bad_photo_are_serving_errors(weights):
    service = CaptionService(ServiceConfig(weights_dir=weights, hub_examples=""))
    with pytest.raises(ServingError, match="No bundle named 'nope'. Available: tiny-a, tiny-b, tiny-c"):
        service.caption(np.zeros((20, 20, 3), np.uint8), "nope")
    with pytest.raises(ServingError, match="Upload a photo"):
        service.caption(None, "tiny-a")


def test_the_first_caption_of_a_dataset_photo_has_cider(weights, tmp_path):
    """No waiting for a first visitor: the CIDEr-D frequencies come with the reference index."""
    data = make_flickr(tmp_path / "flickr", per_split=(4, 2, 3), bad=False)
    ReferenceIndex.build(data).save(str(tmp_path / "index"))
    service = CaptionService(ServiceConfig(weights_dir=weights, reference_index=str(tmp_path / "index"),
                                           hub_examples=""))
    service.start()
    name = sorted(os.listdir(os.path.join(data, "Images")))[0]
    answer = service.caption(Image.open(os.path.join(data, "Images", name)), "tiny-a", "greedy")
    assert answer["reference_image"] == name and {"BLEU-4", "CIDEr"} <= set(answer["captions"][0])
    compared = service.compare(Image.open(os.path.join(data, "Images", name)), "greedy")
    assert [r["bundle"] for r in compared["rows"]] == ["tiny-a", "tiny-b", "tiny-c"]
    assert all("CIDEr" in r for r in compared["rows"])


def test_served_files_are_the_examples_and_curves_alone(weights, tmp_path):
    data = make_flickr(tmp_path / "flickr", per_split=(4, 2, 3), bad=False)
    service = CaptionService(ServiceConfig(weights_dir=weights, data_dir=data, n_examples=2, hub_examples=""))
    files = service.served_files()
    assert len(files) == 2 and all(f.endswith(".jpg") and os.path.isfile(f) for f in files)
    assert not any(f.endswith(".txt") for f in files)


def test_a_decoding_in_a_few_words():
    from caption_core.serving import describe_decoding

    options = {"beam_width": 5, "length_penalty": 1.0, "guide_threshold": 0.5, "guide_veto": True,
               "guide_veto_alone": True, "guide_detector": 0.5, "guide_detector_first": True}
    assert describe_decoding("guided", options) == "guided (detector 0.5 first, classifier 0.5, veto alone), beam 5, alpha 1.0"
    assert describe_decoding("guided", {**options, "no_repeat_within": 4}).endswith("alpha 1.0, no word again within 4")
    assert describe_decoding("beam", {"beam_width": 7, "consensus": True}) == "beam, beam 7, consensus"
    assert describe_decoding("greedy", {"no_repeat_within": 0}) == "greedy"
    assert describe_decoding("beam", {"beam_width": 10, "consensus": True, "lookahead": 0}) == \
        "beam, beam 10, consensus, lookahead 0"
    assert describe_decoding("beam", {"beam_width": 10, "lookahead": 60}) == "beam, beam 10"
