"""caption_core.head_start: the default bundle loaded by a second process that answers the first captions
until the page's own pool has loaded it (a real child process on tiny bundles)."""

import json
import os
import signal
import socket
import sys
import time

import numpy as np
import pytest
from PIL import Image

from caption_core.bundle import save_bundle
from caption_core.head_start import HeadStart, recv, send
from caption_core.serving import CaptionService, ServiceConfig, ServingError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, socket pairs")


@pytest.fixture(scope="module")
def weights(tmp_path_factory, tiny_parts):
    root = tmp_path_factory.mktemp("head-start")
    enc, dec, vocab = tiny_parts
    for name in ("tiny-a", "tiny-b"):
        save_bundle(str(root / "weights" / name), encoder=enc, decoder=dec, vocab=vocab)
    return str(root / "weights")


def photo(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 52, 3), dtype=np.uint8))


def test_frames_round_trip_without_pickle():
    a, b = socket.socketpair()
    with a, b:
        send(a, {"op": "caption", "x": np.float32(0.5), "v": np.arange(3)}, b"\x00\x01" * 1000)
        header, payload = recv(b)
        assert header == {"op": "caption", "x": 0.5, "v": [0, 1, 2]} and payload == b"\x00\x01" * 1000
        send(a, {"op": "stop"})
        assert recv(b) == ({"op": "stop"}, b"")
        a.close()
        with pytest.raises(EOFError):
            recv(b)


def test_it_answers_as_the_pool_would_until_the_pool_has_loaded_the_bundle(weights):
    head = HeadStart.start(weights, encoder_options={})
    service = CaptionService(ServiceConfig(weights_dir=weights, preload="default", hub_examples="",
                                           head_start_idle_s=1.5))
    service.bundles.attach(head)
    try:
        assert head.wait(180) and head.bundle == "tiny-a" == service.bundles.default
        assert service.bundles.status()[0]["head_start"] and service.bundles.status_line() == ""
        answers = [service.caption(photo(i), "tiny-a", strategy, {"max_length": 6})
                   for i, strategy in enumerate(("greedy", "beam", None))]
        assert head.served == 3 and service.bundles.state("tiny-a") == "not loaded"  # the page loaded nothing
        with pytest.raises(ServingError, match="beam_width"):  # the page's own message for a bad option
            service.caption(photo(), "tiny-a", "beam", {"beam_width": 0})
        pid = head.proc.pid

        service.start()  # the page's pool loads tiny-a once the head start is idle, then stops it
        for _ in range(8):  # a visitor's captions, 0.25 s apart: the head start is never idle for 1.5 s
            service.caption(photo(), "tiny-a", "greedy", {"max_length": 6})
            time.sleep(0.25)
        assert head.served == 11 and service.bundles.state("tiny-a") == "not loaded"
        deadline = time.time() + 120
        while head.proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert service.bundles.is_ready("tiny-a") and head.proc.returncode == 0 and not head.serving
        assert not os.path.exists(f"/proc/{pid}/status") or "zombie" in open(f"/proc/{pid}/status").read()
        again = [service.caption(photo(i), "tiny-a", strategy, {"max_length": 6})
                 for i, strategy in enumerate(("greedy", "beam", None))]
        assert head.served == 11  # answered by this process now
        untimed = [{k: v for k, v in a.items() if not k.endswith("_ms")} for a in (*answers, *again)]
        assert json.loads(json.dumps(untimed[:3])) == json.loads(json.dumps(untimed[3:]))  # field by field
        assert not service.bundles.status()[0]["head_start"]
    finally:
        head.close()


def test_a_head_start_that_dies_is_replaced_by_the_pool(weights, caplog):
    head = HeadStart.start(weights, encoder_options={})
    service = CaptionService(ServiceConfig(weights_dir=weights, preload="none", hub_examples=""))
    service.bundles.attach(head)
    try:
        assert head.wait(180)
        os.kill(head.proc.pid, signal.SIGKILL)
        head.proc.wait(30)
        answer = service.caption(photo(), "tiny-a", "greedy", {"max_length": 6})
        assert answer["captions"] and service.bundles.is_ready("tiny-a")
        assert head.error and "lost the connection" in head.error and service.bundles.stand_in("tiny-a") is None
        assert "this process loads the bundle itself" in caplog.text
    finally:
        head.close()


def test_a_head_start_with_no_bundle_says_why(tmp_path):
    head = HeadStart.start(str(tmp_path), encoder_options={})
    try:
        assert not head.wait(120) and "no bundle in" in head.error
        assert head.proc.wait(30) == 0
    finally:
        head.close()


def test_the_app_starts_one_unless_told_not_to(monkeypatch, weights):
    monkeypatch.setenv("CAPTION_APP_NO_DEMO", "1")
    import app

    assert app.start_head_start(app.parser().parse_args(["--no-head-start"])) is None
    assert app.start_head_start(app.parser().parse_args(["--preload", "none"])) is None
    head = app.start_head_start(app.parser().parse_args(["--weights", weights, "--encoder-option", "precision=float32"]))
    try:
        assert head.wait(180) and head.bundle == "tiny-a"
    finally:
        head.close()
    assert head.proc.returncode == 0
