"""What the COCO detector sees in a dataset's photos, cached like features (``<cache>/detections/``).

Guided decoding on a dev or test split reads each photo's ``Objects`` beside its features; a decoding sweep
(``python -m training choose``) reads them dozens of times, and the detector costs about 20 ms a photo, so they
are computed once per (detector config + weights fingerprint, photo list) and kept as JSON: the detections at the
detector's ``min_score`` (the lowest guidance threshold there is), each photo's list or null where it could not
be read.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Sequence

import numpy as np

from caption_core.batch import local_batches
from caption_core.detectors import Objects
from caption_core.images import ImageError, load_image

from .common import read_json, write_json

CACHE_FORMAT = "training.detections/1"


def detection_key(detector, photos: Sequence[tuple[str, object]]) -> dict:
    """What the cached detections depend on: the detector (name, config but its batching and threads, weights)
    and the photos (id and file size; in-memory photos: their length)."""
    cfg = {k: v for k, v in detector.config.to_dict().items() if k not in ("batch_size", "threads")}
    sizes = [(i, os.path.getsize(p) if isinstance(p, str) and os.path.isfile(p) else len(p) if hasattr(p, "__len__")
              else None) for i, p in photos]
    return {"format": CACHE_FORMAT, "detector": detector.name, "config": cfg,
            "weights": detector.weights_fingerprint(), "photos": [list(s) for s in sizes]}  # as JSON reads it back


def detect_photos(detector, photos: Sequence[tuple[str, object]], cache: str = "cache", what: str = "photos",
                  batch_size: int = 16) -> list[Objects | None]:
    """``photos``: (id, what ``load_image`` reads) pairs -> each one's ``Objects`` (None: unreadable), in order,
    from the cache when it holds them."""
    key = detection_key(detector, photos)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = os.path.join(cache, "detections", f"{detector.name}-{digest}.json")
    done = read_json(path)
    if done is not None and done.get("key") == key:
        return [None if o is None else Objects.from_dict(o) for o in done["objects"]]

    def prepare(item):
        try:
            return detector.prepare(load_image(item[1]))
        except ImageError:
            return None

    t0, out = time.perf_counter(), []
    for prepared in local_batches(prepare, photos, len(photos), batch_size, threads=2):
        good = [p for p in prepared if p is not None]
        found = iter(detector.detect_arrays(np.stack(good)) if good else [])
        out += [None if p is None else next(found) for p in prepared]
    seconds = time.perf_counter() - t0
    print(f"detections: {what}, {len(photos)} photos in {seconds:.1f} s", flush=True)
    write_json(path, {"key": key, "seconds": round(seconds, 2),
                      "objects": [None if o is None else o.to_dict() for o in out]})
    return out


def split_objects(detector, dataset: str, split: str, ids: Sequence[str], cache: str = "cache") -> list[Objects | None]:
    """The detector's ``Objects`` of a Flickr split's photos ``ids`` (the rows ``training.guide.flickr_split`` kept),
    in that order."""
    from .datasets import load_splits

    by_id = {e.image_id: e.image for e in load_splits(dataset, [split])[split]}
    return detect_photos(detector, [(i, by_id[i]) for i in ids], cache, what=f"{os.path.basename(dataset)} [{split}]")


def coco_objects(detector, photos, ids: Sequence[str], cache: str = "cache") -> list[Objects | None]:
    """The detector's ``Objects`` of a COCO-format folder's photos ``ids`` (``training.coco.coco_features``' rows)."""
    by_id = {p.image_id: p.path for p in photos}
    return detect_photos(detector, [(i, by_id[i]) for i in ids], cache, what="coco")
