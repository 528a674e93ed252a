"""Datasets: Flickr8k / Flickr30k captions and CIFAR-10 images, from a local folder or the Hub.

Caption datasets give ``CaptionExample``s (an id, something ``load_image`` can open, raw captions).
Sources:
- a local folder in the original Flickr8k layout (``Images/`` or ``Flicker8k_Dataset/``,
  ``Flickr8k.token.txt``, ``Flickr_8k.{train,dev,test}Images.txt``, possibly under ``Flickr8k_text/``);
- a local folder in the Kaggle layout (``Images/``, ``captions.txt`` CSV ``image,caption``; no
  official split: a fixed, seeded 6000/1000/rest split by image);
- a Hugging Face dataset id (``jxie/flickr8k``, ``umaru97/flickr30k_train_val_test``, or any repo
  with the same columns), or a local folder of its parquet files. Columns: ``image`` and either
  ``caption_0``..``caption_4`` or a ``caption`` list.
CIFAR-10: an ImageFolder (``train/<class>/*.jpg``, ``test/<class>/*.jpg``) or the Hub
(``uoft-cs/cifar10``: ``img``, ``label``), decoded once into uint8 arrays.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
from typing import Any

import numpy as np

from caption_core.flickr import (CaptionExample, DatasetError, LoadReport, _check_split, _image_dir,
                                 load_flickr_local)
from caption_core.hub import SPLIT_ALIASES as _SPLIT_ALIASES  # one table for training and the app

log = logging.getLogger("training.datasets")

FLICKR8K_HUB = "jxie/flickr8k"
FLICKR30K_HUB = "umaru97/flickr30k_train_val_test"  # parquet, Karpathy split 29000/1014/1000
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# -- Hub (or local parquet in the Hub schema) ---------------------------------------------
def _parquet_files(folder: str, split: str) -> list[str]:
    for alias in _SPLIT_ALIASES[split]:
        found = sorted(set(glob.glob(os.path.join(folder, "**", f"{alias}-*.parquet"), recursive=True) +
                           glob.glob(os.path.join(folder, "**", alias, "*.parquet"), recursive=True)))
        if found:
            return found
    return []


def hub_folder(source: str) -> str:
    """A local folder of parquet files for a Hub dataset id (cache or download) or a local folder."""
    if os.path.isdir(source):
        return source
    from caption_core.hub import snapshot

    return snapshot(source, what=f"dataset '{source}'", repo_type="dataset", allow_patterns=["*.parquet", "*.md"])


def _load_parquet(source: str, split: str, columns: list[str] | None = None):
    import datasets

    folder = hub_folder(source)
    files = _parquet_files(folder, split)
    if not files:
        raise DatasetError(f"dataset '{source}' has no parquet files for split '{split}' in '{folder}' "
                           f"(looked for {', '.join(a + '-*.parquet' for a in _SPLIT_ALIASES[split])})")
    ds = datasets.load_dataset("parquet", data_files={split: files}, split=split, columns=columns)
    for col in ("image", "img"):
        if col in ds.column_names:
            ds = ds.cast_column(col, datasets.Image(decode=False))  # bytes: decoded by load_image
    return ds


def _image_payload(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        if value.get("path") and os.path.isfile(value["path"]):
            return value["path"]
        return None
    return value


def load_flickr_hub(source: str, split: str, report: LoadReport | None = None) -> list[CaptionExample]:
    split = _check_split(split)
    report = report if report is not None else LoadReport()
    ds = _load_parquet(source, split)
    cols = ds.column_names
    if "image" not in cols:
        raise DatasetError(f"dataset '{source}' has no 'image' column (columns: {cols})")
    numbered = sorted((c for c in cols if c.startswith("caption_")), key=lambda c: int(c.split("_")[1]))
    if "caption" not in cols and not numbered:
        raise DatasetError(f"dataset '{source}' has neither a 'caption' list nor caption_0.. columns (columns: {cols})")
    out = []
    for i, row in enumerate(ds):
        caps = row["caption"] if "caption" in cols else [row[c] for c in numbered]
        if isinstance(caps, str):
            caps = [caps]
        caps = tuple(c for c in (caps or []) if isinstance(c, str) and c.strip())
        payload = _image_payload(row["image"])
        if not caps:
            report.skip("no captions")
        elif payload is None:
            report.skip("no image")
        else:
            image_id = row.get("filename") or row.get("img_id") or f"{split}-{i:06d}"
            out.append(CaptionExample(str(image_id), payload, caps))
    report.log(f"flickr {source} [{split}]")
    return out


def load_captions(source: str, split: str, report: LoadReport | None = None) -> list[CaptionExample]:
    """Any Flickr source: a local original/Kaggle folder, a local parquet folder, or a Hub id."""
    if os.path.isdir(source):
        if _image_dir(source) is not None:
            return load_flickr_local(source, split, report)
        if glob.glob(os.path.join(source, "**", "*.parquet"), recursive=True):
            return load_flickr_hub(source, split, report)
        raise DatasetError(f"'{source}' holds neither a Flickr folder (Images/ + Flickr8k.token.txt or captions.txt) "
                           "nor parquet files")
    if "/" in source and not source.startswith((".", "/")):
        return load_flickr_hub(source, split, report)
    raise DatasetError(f"no dataset at '{source}': pass a local folder or a Hub id such as {FLICKR8K_HUB} "
                       f"or {FLICKR30K_HUB}")


# -- CIFAR-10 -----------------------------------------------------------------------------
def load_cifar10(source: str, split: str, cache_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """-> images uint8 (N, 32, 32, 3), labels int64 (N,). ``split``: 'train' or 'test'.

    Decoded once; with ``cache_dir`` the arrays are kept as .npy next to a JSON index."""
    if split not in ("train", "test"):
        raise DatasetError(f"CIFAR-10 has splits 'train' and 'test', not {split!r}")
    key = None
    source_id = os.path.abspath(source) if os.path.isdir(source) else source
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        key = os.path.join(cache_dir, f"cifar10-{split}")
        if os.path.exists(key + ".json"):
            with open(key + ".json") as f:
                if json.load(f).get("source") == source_id:
                    return np.load(key + "-images.npy"), np.load(key + "-labels.npy")
    if os.path.isdir(os.path.join(source, split)):
        images, labels = _cifar_imagefolder(os.path.join(source, split))
    else:
        images, labels = _cifar_parquet(source, split)
    if key:
        np.save(key + "-images.npy", images)
        np.save(key + "-labels.npy", labels)
        from caption_core.files import write_json_atomic

        write_json_atomic(key + ".json", {"source": source_id, "split": split, "count": int(len(labels))})
    return images, labels


def _cifar_imagefolder(folder: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    missing = [c for c in CIFAR10_CLASSES if not os.path.isdir(os.path.join(folder, c))]
    if missing:
        raise DatasetError(f"CIFAR-10 ImageFolder '{folder}' lacks class folders {missing}")
    images, labels = [], []
    for label, cls in enumerate(CIFAR10_CLASSES):
        for name in sorted(os.listdir(os.path.join(folder, cls))):
            try:
                with Image.open(os.path.join(folder, cls, name)) as im:
                    images.append(np.asarray(im.convert("RGB").resize((32, 32)), dtype=np.uint8))
                labels.append(label)
            except OSError:
                log.warning("CIFAR-10: skipped unreadable %s/%s", cls, name)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _cifar_parquet(source: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    ds = _load_parquet(source, "train" if split == "train" else "test")
    col = "img" if "img" in ds.column_names else "image"
    images, labels = [], []
    for row in ds:
        try:
            payload = _image_payload(row[col])
            im = Image.open(io.BytesIO(payload) if isinstance(payload, bytes) else payload)
            images.append(np.asarray(im.convert("RGB").resize((32, 32)), dtype=np.uint8))
            labels.append(int(row["label"]))
        except (OSError, TypeError):
            log.warning("CIFAR-10: skipped an unreadable row")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def dataset_name(source: str) -> str:
    """A dataset's short name for bundle names and metric keys: its folder's name ('flickr8k'), or the Hub id."""
    base = os.path.basename(os.path.normpath(source)).lower()
    return base if base else source.replace("/", "_")


def load_splits(source: str, splits=("train", "dev", "test")) -> dict:
    """split -> its ``CaptionExample``s, each split's count (and what was skipped) printed."""
    out = {}
    for split in splits:
        report = LoadReport()
        out[split] = load_captions(source, split, report)
        print(f"dataset {source} [{split}]: {len(out[split])} images"
              + (f", skipped {report.skipped}" if report.skipped else ""), flush=True)
    return out
