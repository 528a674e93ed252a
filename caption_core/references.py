"""Reference captions of dataset photos, found by image content, and the CIDEr-D document frequencies
of the dataset's references: what the app shows next to a caption.

``ReferenceIndex`` holds, for every photo of a dataset, its id, split, captions and fingerprint
(``caption_core.photo_index``), and no photo. It is saved as two files, ``<name>.json`` (what it is,
how it was made, the ids, splits and captions) and ``<name>.npz`` (the fingerprints: plain arrays,
read without pickle), so it ships with the app (``references/flickr8k.*``, made by
``python -m training references``) and a Space without the dataset shows the references of any
Flickr8k photo a user uploads.

``References`` is the app's service: the shipped index when there is one, else an index built from a
dataset folder (and cached), loaded in a thread; lookups wait for it a bounded time.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import threading
import time
from typing import Sequence

import numpy as np
from PIL import Image

from .files import sha256_file, write_json_atomic
from .flickr import load_flickr_splits
from .metrics import CiderD, sentence_bleu
from .photo_index import MatchConfig, PhotoIndex

log = logging.getLogger("caption_core.references")
INDEX_FORMAT = "caption_core.references/1"


class ReferenceIndex:
    """The photos of a dataset: ids, splits, captions and fingerprints (rows in the same order)."""

    def __init__(self, ids: Sequence[str], splits: Sequence[str], captions: Sequence[Sequence[str]],
                 photos: PhotoIndex, made: dict | None = None, cider: CiderD | None = None):
        if not (len(ids) == len(splits) == len(captions) == len(photos)):
            raise ValueError(f"reference index: {len(ids)} ids, {len(splits)} splits, {len(captions)} caption "
                             f"lists and {len(photos)} fingerprints")
        self.ids, self.splits = list(ids), list(splits)
        self.captions = [tuple(c) for c in captions]
        self.photos = photos
        self.made = made or {}
        self._cider = cider

    @property
    def cider(self) -> CiderD:
        """CIDEr-D with the document frequencies of these photos' captions: read from the index files when
        they hold them (every index saved since they do), else counted once here (about 2 s for Flickr8k)."""
        if self._cider is None:
            self._cider = CiderD(self.captions)
        return self._cider

    @classmethod
    def build(cls, data_dir: str, splits: Sequence[str] = ("train", "dev", "test"), made: dict | None = None,
              config: MatchConfig = MatchConfig(), by_split: dict | None = None) -> "ReferenceIndex":
        """Decode every photo of a Flickr folder (original or Kaggle layout) once and fingerprint it.
        ``by_split``: the folder's splits when the caller has read them already."""
        by_split = by_split or load_flickr_splits(data_dir, tuple(splits))
        rows = [(e, s) for s in splits for e in by_split[s]]
        kept, images = [], []
        for e, s in rows:
            try:
                with Image.open(e.image) as im:
                    images.append(im.convert("RGB"))
                kept.append((e, s))
            except OSError as exc:
                log.warning("reference index: %s skipped (%s)", e.image_id, exc)
        photos = PhotoIndex.build(images, config)
        made = {"source": os.path.basename(os.path.normpath(data_dir)), "photos": len(kept),
                "splits": {s: sum(1 for _, k in kept if k == s) for s in splits},
                "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                **(made or {})}
        return cls([e.image_id for e, _ in kept], [s for _, s in kept], [e.captions for e, _ in kept], photos, made)

    # -- files ---------------------------------------------------------------------------------
    def save(self, prefix: str) -> tuple[str, str]:
        """Write ``<prefix>.npz`` then ``<prefix>.json`` (which records the npz's sha256), atomically each."""
        folder = os.path.dirname(os.path.abspath(prefix))
        os.makedirs(folder, exist_ok=True)
        npz = prefix + ".npz"
        tmp = npz + ".tmp.npz"
        df = self.cider.frequencies()
        grams = "\n".join(" ".join(g) for g in df).encode("utf-8")  # one UTF-8 blob: no pickle, no object array
        np.savez_compressed(tmp, hashes=self.photos.hashes, thumbs=self.photos.thumbs,
                            cider_ngrams=np.frombuffer(grams, np.uint8), cider_df=np.fromiter(df.values(), np.uint32))
        os.replace(tmp, npz)
        doc = {"format": INDEX_FORMAT, "made": self.made, "match": self.photos.config.to_dict(),
               "fingerprints": {"file": os.path.basename(npz), "sha256": sha256_file(npz)},
               "cider": {"documents": self.cider.documents, "ngrams": len(df), "min_df": 2,
                         "note": "CIDEr-D document frequencies of these captions (n = 1..4), in the npz"},
               "photos": [{"id": i, "split": s, "captions": list(c)}
                          for i, s, c in zip(self.ids, self.splits, self.captions)]}
        write_json_atomic(prefix + ".json", doc)
        return prefix + ".json", npz

    @classmethod
    def load(cls, prefix: str) -> "ReferenceIndex":
        """From ``save``'s two files; loud errors when one is missing, altered or of another format."""
        path = prefix + ".json"
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as exc:
            raise ValueError(f"reference index '{os.path.basename(path)}' cannot be read: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT:
            raise ValueError(f"reference index '{os.path.basename(path)}' is not of format {INDEX_FORMAT}; "
                             "rebuild it with: python -m training references")
        npz = os.path.join(os.path.dirname(os.path.abspath(path)), doc["fingerprints"]["file"])
        if not os.path.isfile(npz) or sha256_file(npz) != doc["fingerprints"]["sha256"]:
            raise ValueError(f"reference index '{os.path.basename(path)}': its fingerprints file is missing or does "
                             "not match its checksum; rebuild it with: python -m training references")
        with np.load(npz, allow_pickle=False) as z:
            photos = PhotoIndex(z["hashes"], z["thumbs"], MatchConfig.from_dict(doc.get("match", {})))
            cider = None
            if "cider" in doc and "cider_ngrams" in z:  # an index saved before they were stored: counted on use
                grams = [tuple(g.split(" ")) for g in z["cider_ngrams"].tobytes().decode("utf-8").split("\n")]
                cider = CiderD.from_frequencies(dict(zip(grams, z["cider_df"].tolist())), doc["cider"]["documents"])
        rows = doc["photos"]
        return cls([r["id"] for r in rows], [r["split"] for r in rows], [r["captions"] for r in rows], photos,
                   doc.get("made"), cider)

    # -- use -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, img: Image.Image) -> tuple[str, tuple[str, ...]] | None:
        """(image id, reference captions) of the dataset photo that ``img`` is a copy of, else None."""
        row = self.photos.match(img)
        return None if row is None else (self.ids[row], self.captions[row])


class References:
    """What the app asks: the reference captions of a photo and per-caption scores against them.

    Without ``data_dir`` the index is the shipped one (``index_prefix``) when its files exist. With a
    ``data_dir`` (a Flickr folder) it is the shipped one if that describes the folder (same photo ids and
    captions), else one built from the folder (cached under ``cache_dir``); neither: no references. Built or loaded
    in a thread started here or by ``start()``, with the CIDEr-D document frequencies of its captions (stored in
    the index files), so the first caption of a dataset photo has both scores. ``examples``: the first test
    photos of ``data_dir``.
    """

    def __init__(self, data_dir: str | None, n_examples: int, cache_dir: str | None = None, start: bool = True,
                 index_prefix: str | None = None):
        self.data_dir, self.cache_dir, self.index_prefix = data_dir, cache_dir, index_prefix
        self.examples: list[str] = []
        self.splits: dict = {}  # the dataset folder's splits, read once
        self.index: ReferenceIndex | None = None
        self.error: str | None = None
        self.ready = threading.Event()  # the photo index and its CIDEr-D frequencies are loaded (or failed)
        self._started = False
        self.shipped = bool(index_prefix) and os.path.isfile(index_prefix + ".json")
        if data_dir:
            try:
                self.splits = load_flickr_splits(data_dir, ("train", "dev", "test"))
                self.examples = [e.image for e in self.splits["test"][:n_examples]]
            except Exception as exc:
                log.warning("no dataset examples: %s", exc)
                self.data_dir = None
        if not self.available:
            self.ready.set()
        elif start:
            self.start()

    @property
    def available(self) -> bool:
        """An index can be had: shipped, or buildable from the dataset folder."""
        return self.shipped or bool(self.data_dir)

    def start(self) -> None:
        if self.ready.is_set() or self._started:
            return
        self._started = True
        threading.Thread(target=self._load, daemon=True, name="reference-index").start()

    def _load(self) -> None:
        try:
            t0 = time.perf_counter()
            index = (self._shipped() if self.shipped and not self.data_dir
                     else self._shipped_for_dataset() or self._built())
            index.cider  # noqa: B018  the CIDEr-D frequencies (stored in the index; counted if it predates that)
            self.index = index
            log.info("reference index: %d photos in %.1f s", len(index), time.perf_counter() - t0)
        except Exception as exc:  # the app runs on without references, and says why in the log
            self.error = str(exc)
            log.warning("no reference index: %s", exc)
        finally:
            self.ready.set()

    def _shipped(self) -> ReferenceIndex:
        return ReferenceIndex.load(self.index_prefix)

    def _shipped_for_dataset(self) -> ReferenceIndex | None:
        """The shipped index when it describes the configured dataset folder (the same photo ids and captions:
        the fingerprints match the 224x224 copies and the originals alike), else None. Saves decoding every
        photo of the folder at a first start."""
        if not self.shipped:
            return None
        try:
            shipped = ReferenceIndex.load(self.index_prefix)
        except ValueError as exc:
            log.info("shipped reference index not used for %s: %s", self.data_dir, exc)
            return None
        folder = {e.image_id: tuple(e.captions) for split in self.splits.values() for e in split}
        mine = dict(zip(shipped.ids, shipped.captions))
        return shipped if folder == mine else None

    def _built(self) -> ReferenceIndex:
        """From the dataset folder, kept in cache/ so that later starts skip decoding its photos."""
        key = hashlib.sha256(os.path.abspath(self.data_dir).encode()).hexdigest()[:12]
        prefix = os.path.join(self.cache_dir, f"references-{key}") if self.cache_dir else None
        if prefix and os.path.isfile(prefix + ".json"):
            try:
                return ReferenceIndex.load(prefix)
            except ValueError as exc:
                log.warning("cached reference index unusable, rebuilding: %s", exc)
        index = ReferenceIndex.build(self.data_dir, by_split=self.splits)
        if prefix:
            try:
                index.save(prefix)
            except OSError:
                pass  # a read-only checkout still works, just slower to start
        return index

    def lookup(self, img: Image.Image, wait: float = 3.0) -> tuple[str, tuple[str, ...]] | None:
        """(image id, reference captions) of the dataset photo that ``img`` is, else None. While the
        index is still loading (a first start without a shipped index decodes every dataset photo) a
        caption waits at most ``wait`` seconds for it, and comes without references after that."""
        if not self.available:
            return None
        self.ready.wait(wait)
        return None if self.index is None else self.index.lookup(img)

    def scores(self, caption: str, refs: tuple[str, ...]) -> dict[str, float]:
        """BLEU-4 and CIDEr-D of ``caption`` against ``refs`` (the references of a photo ``lookup`` found: the
        index, and so its CIDEr-D document frequencies, is loaded)."""
        out = {"BLEU-4": round(sentence_bleu(caption, refs)[3], 3)}
        if self.index is not None:
            out["CIDEr"] = round(self.index.cider.score(caption, refs), 3)
        return out
