"""``python -m training compact BUNDLE...``: make bundles that were written before the weights' diet ship light.

- **float16 storage**: a decoder ``.keras`` holding float32 weights is rewritten with them stored as float16 (half the
  bytes; decoding casts back and computes in float32). What that costs in caption quality is measured, not assumed:
  ``benchmarks/weights_storage.py`` scores each bundle's default decoding on Flickr8k dev before and after.
- **ensembles by reference**: an ensemble that holds copies of its members' decoders (``decoder_<i>.keras``) refers
  to the member bundles beside it instead, each found by its weights (the same tensors, whatever the storage), and
  the copies are removed.

The manifest records what was done (``decoder.storage``; ``compacted``), its checksums are updated, and every other
file must still verify. Members are compacted before the ensembles that refer to them (the order given is
rearranged so), since the ensemble records the sha256 of its members' files as they are now.
"""

from __future__ import annotations

import os
import time

import numpy as np

from caption_core.bundle import read_manifest, update_manifest, verify_bundle
from caption_core.decoders import DecoderConfig, read_keras_weights, store_half, weights_storage
from caption_core.files import sha256_file


def same_weights(a: str, b: str) -> bool:
    """Whether two ``.keras`` decoders hold the same tensors (compared at float16: a float32 copy of a float16 file's
    weights counts as the same)."""
    wa, wb = read_keras_weights(a), read_keras_weights(b)
    if set(wa) != set(wb):
        return False
    half = lambda x: np.asarray(x, np.float32).astype(np.float16)  # noqa: E731
    return all(len(wa[k]) == len(wb[k]) and all(x.shape == y.shape and np.array_equal(half(x), half(y))
                                                for x, y in zip(wa[k], wb[k])) for k in wa)


def same_config(a: dict, b: dict) -> bool:
    """Two manifests' decoder configs describe the same decoder (fields an older manifest lacks take their defaults)."""
    return DecoderConfig.from_dict(a) == DecoderConfig.from_dict(b)


def compact_single(folder: str) -> dict:
    """float16 storage for a single bundle's decoder. -> what changed."""
    m = verify_bundle(folder)
    entry = m["decoder"]
    path = os.path.join(folder, entry["file"])
    if weights_storage(path) == "float16":
        return {"bundle": m["name"], "changed": False}
    before = os.path.getsize(path)
    store_half(path)
    entry = {**entry, "storage": "float16"}
    record = {"storage": "float16 (was float32)", "bytes": [before, os.path.getsize(path)], "when": time.strftime("%Y-%m-%d")}
    update_manifest(folder, {"decoder": entry, "compacted": record}, add_files=[entry["file"]])
    return {"bundle": m["name"], "changed": True, **record}


def compact_ensemble(folder: str) -> dict:
    """An ensemble's copied member decoders replaced by references to the member bundles beside it."""
    m = verify_bundle(folder)
    parent = os.path.dirname(os.path.abspath(folder))
    candidates = [os.path.join(parent, n) for n in sorted(os.listdir(parent))
                  if os.path.isfile(os.path.join(parent, n, "manifest.json")) and os.path.join(parent, n) != os.path.abspath(folder)]
    members, removed = [], []
    for entry in m["decoder"]["members"]:
        if "bundle" in entry:
            members.append(entry)
            continue
        copy = os.path.join(folder, entry["file"])
        home = None
        for c in candidates:
            cm = read_manifest(c)
            if "members" not in cm["decoder"] and same_config(cm["decoder"]["config"], entry["config"]) \
                    and same_weights(copy, os.path.join(c, cm["decoder"]["file"])):
                home = c
                break
        if home is None:
            raise ValueError(f"ensemble '{m['name']}': no bundle beside it holds the weights of {entry['file']}; "
                             "keep the copy, or put the member bundle in the same folder")
        hm = verify_bundle(home)
        members.append({"bundle": os.path.basename(home), "file": hm["decoder"]["file"],
                        "sha256": hm["files"][hm["decoder"]["file"]], "config": entry["config"],
                        "features": entry["features"]})
        removed.append(entry["file"])
    if not removed:
        return {"bundle": m["name"], "changed": False}
    files = {k: v for k, v in m["files"].items() if k not in removed}
    saved = sum(os.path.getsize(os.path.join(folder, f)) for f in removed)
    record = {"members": "referred to by name and sha256 (were copied)", "removed": removed, "bytes_saved": saved,
              "when": time.strftime("%Y-%m-%d")}
    update_manifest(folder, {"decoder": {**m["decoder"], "members": members}, "files": files, "compacted": record})
    for f in removed:
        os.remove(os.path.join(folder, f))
    verify_bundle(folder)
    return {"bundle": m["name"], "changed": True, **record}


def compact(folders: list[str]) -> list[dict]:
    """Single bundles first, then ensembles (they record their members' files as compacted)."""
    singles = [f for f in folders if "members" not in read_manifest(f)["decoder"]]
    ensembles = [f for f in folders if f not in singles]
    out = [compact_single(f) for f in singles] + [compact_ensemble(f) for f in ensembles]
    for r in out:
        print(r, flush=True)
    return out
