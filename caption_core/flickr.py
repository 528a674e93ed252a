"""Flickr8k / Flickr30k captions from a local folder in the original or the Kaggle layout.

Shared by the app (reference captions of dataset photos) and ``training`` (which adds the Hub and
parquet sources):
- the original Flickr8k layout (``Images/`` or ``Flicker8k_Dataset/``, ``Flickr8k.token.txt``,
  ``Flickr_8k.{train,dev,test}Images.txt``, possibly under ``Flickr8k_text/``);
- the Kaggle layout (``Images/``, ``captions.txt`` CSV ``image,caption``; no official split: a fixed,
  seeded 6000/1000/rest split by image).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import random
from typing import Any

log = logging.getLogger("caption_core.flickr")
SPLITS = ("train", "dev", "test")


class DatasetError(ValueError):
    """A dataset that cannot be found or read; the message says where we looked."""


@dataclasses.dataclass(frozen=True)
class CaptionExample:
    image_id: str  # file name or '<split>-<row>' for Hub rows
    image: Any  # a path or the encoded bytes: anything caption_core.images.load_image opens
    captions: tuple[str, ...]  # raw reference captions


@dataclasses.dataclass
class LoadReport:
    """What a loader skipped, so bad rows are counted, never fatal."""

    skipped: dict[str, int] = dataclasses.field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def log(self, what: str) -> None:
        for reason, n in self.skipped.items():
            log.warning("%s: skipped %d rows (%s)", what, n, reason)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; valid: {list(SPLITS)}")
    return split


# -- Flickr, original layout --------------------------------------------------------------
def _find(root: str, *names: str) -> str | None:
    for name in names:
        for base in (root, os.path.join(root, "Flickr8k_text"), os.path.join(root, "Flickr8k_Dataset")):
            path = os.path.join(base, name)
            if os.path.exists(path):
                return path
    return None


def _image_dir(root: str) -> str | None:
    return _find(root, "Images", "Flicker8k_Dataset", "Flickr8k_Dataset", "flickr30k-images")


def load_flickr_local(root: str, split: str, report: LoadReport | None = None) -> list[CaptionExample]:
    """One split of a Flickr folder in the original or the Kaggle layout."""
    return load_flickr_splits(root, (_check_split(split),), report)[split]


def load_flickr_splits(root: str, splits=SPLITS, report: LoadReport | None = None) -> dict[str, list[CaptionExample]]:
    """Several splits of a Flickr folder, reading its caption file once (40,000 lines for Flickr8k)."""
    for split in splits:
        _check_split(split)
    report = report if report is not None else LoadReport()
    images = _image_dir(root)
    token_file = _find(root, "Flickr8k.token.txt")
    kaggle = _find(root, "captions.txt")
    if images is None or (token_file is None and kaggle is None):
        raise DatasetError(
            f"no Flickr dataset in '{root}': looked for an image folder (Images/, Flicker8k_Dataset/) and "
            "Flickr8k.token.txt (original layout) or captions.txt (Kaggle layout)")
    captions: dict[str, list[str]] = {}
    names: dict[str, list[str]] = {}
    if token_file:
        with open(token_file, encoding="utf-8") as f:
            for line in f:
                if "\t" not in line:
                    continue
                key, text = line.rstrip("\n").split("\t", 1)
                captions.setdefault(key.split("#", 1)[0], []).append(text)
        for split in splits:
            split_name = {"train": "Flickr_8k.trainImages.txt", "dev": "Flickr_8k.devImages.txt",
                          "test": "Flickr_8k.testImages.txt"}[split]
            split_file = _find(root, split_name)
            if split_file is None:
                raise DatasetError(f"Flickr dataset in '{root}' has no split file {split_name}")
            with open(split_file, encoding="utf-8") as f:
                names[split] = [n.strip() for n in f if n.strip()]
    else:
        with open(kaggle, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                captions.setdefault(row["image"].strip(), []).append(row["caption"])
        shuffled = sorted(captions)
        random.Random(8000).shuffle(shuffled)  # fixed split: the Kaggle copy has no official one
        cut = {"train": shuffled[:6000], "dev": shuffled[6000:7000], "test": shuffled[7000:]}
        names = {split: cut[split] for split in splits}
    out: dict[str, list[CaptionExample]] = {}
    for split in splits:
        out[split] = []
        for name in names[split]:
            caps = tuple(c for c in captions.get(name, []) if c.strip())
            path = os.path.join(images, name)
            if not caps:
                report.skip("no captions")
            elif not os.path.isfile(path):
                report.skip("image file missing")
            else:
                out[split].append(CaptionExample(name, path, caps))
    report.log(f"flickr {root} [{', '.join(splits)}]")
    return out
