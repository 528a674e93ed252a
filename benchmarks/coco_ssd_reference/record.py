"""Record the TF.js reference outputs that tests/test_detectors.py checks the PyTorch port against.

    cd benchmarks/coco_ssd_reference && npm install --ignore-scripts   # @tensorflow/tfjs, pure JavaScript
    ../../.venv/bin/python record.py                                   # -> tests/data/coco_ssd_reference.npz

Each photo is decoded once here (PIL, RGB), and the same uint8 pixels go to TF.js (``record.js``: the carrier's
model.json and shards, ``executeAsync`` on its two outputs) and, in the test, to the port. Per photo it keeps the
pixels' sha256 (the test checks it decodes the same pixels), every anchor's best score and class and its box, and
all 90 scores of the 100 best anchors. Photos: scikit-image's (shipped with the app's requirements) and, where
../shared/data is, three coco-mini photos.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
OUT = os.path.join(ROOT, "tests", "data", "coco_ssd_reference.npz")
COCO = os.path.join(os.path.dirname(ROOT), "shared", "data", "coco-mini", "images")
SKIMAGE = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg")
COCO_PHOTOS = ("000000030752.jpg", "000000063217.jpg", "000000037666.jpg")


def photos() -> dict[str, str]:
    from caption_core.serving import fallback_examples

    found = {os.path.basename(p): p for p in fallback_examples()}
    out = {f"skimage/{n}": found[n] for n in SKIMAGE if n in found}
    out.update({f"coco-mini/{n}": os.path.join(COCO, n) for n in COCO_PHOTOS if os.path.isfile(os.path.join(COCO, n))})
    return out


def main() -> None:
    from caption_core.detectors.coco_ssd import MODEL_DIR, fetch_tarball

    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fetch_tarball()) as tar:  # model.json and its shards only, as data
            for m in tar.getmembers():
                if m.name.startswith(MODEL_DIR) and m.isfile():
                    with open(os.path.join(tmp, os.path.basename(m.name)), "wb") as f:
                        f.write(tar.extractfile(m).read())
        items, pixels = [], {}
        for i, (name, path) in enumerate(photos().items()):
            a = np.asarray(Image.open(path).convert("RGB"))
            a.tofile(os.path.join(tmp, f"{i}.rgb"))
            items.append({"name": str(i), "raw": f"{i}.rgb", "height": a.shape[0], "width": a.shape[1]})
            pixels[name] = a
        with open(os.path.join(tmp, "inputs.json"), "w") as f:
            json.dump(items, f)
        subprocess.run(["node", os.path.join(HERE, "record.js"), tmp, os.path.join(tmp, "inputs.json"),
                        os.path.join(tmp, "out")], check=True, cwd=HERE)
        arrays = {}
        for i, (name, a) in enumerate(pixels.items()):
            scores = np.fromfile(os.path.join(tmp, "out", f"{i}.scores.f32"), "<f4").reshape(1917, 90)
            boxes = np.fromfile(os.path.join(tmp, "out", f"{i}.boxes.f32"), "<f4").reshape(1917, 4)
            top = np.argsort(-scores.max(axis=1), kind="stable")[:100]
            key = name.replace("/", "__").replace(".", "_")
            arrays.update({f"{key}/sha256": np.frombuffer(hashlib.sha256(a.tobytes()).digest(), np.uint8),
                           f"{key}/shape": np.asarray(a.shape, np.int32),
                           f"{key}/max_scores": scores.max(axis=1), f"{key}/classes": scores.argmax(axis=1).astype(np.uint8),
                           f"{key}/boxes": boxes, f"{key}/top": top.astype(np.int32), f"{key}/top_scores": scores[top]})
            print(name, "best:", float(scores.max()), "class index", int(scores.max(axis=1).argmax()))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print("written", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
