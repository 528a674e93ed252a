"""A batch job's config and the workers both engines run: ``CaptionWorker`` (a bundle loaded once: photos -> rows)
and ``EncodeWorker`` (an encoder built once: photos -> features, for ``python -m training features``). One worker
per process (the local engine) or per Ray actor (``caption_core.ray_engine``)."""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Sequence

import numpy as np

from .batch_io import caption_row, error_row, image_payload, rows_table
from .config import Config
from .images import ImageError

ENGINES = ("local", "ray")


@dataclasses.dataclass(frozen=True)
class BatchConfig(Config):
    bundle: str | None = None  # bundle folder or hf://owner/repo (None: the best bundle in weights/, as the app)
    strategy: str | None = None  # decoding strategy (None: the bundle's default)
    options: dict = dataclasses.field(default_factory=dict)  # decoding options over the bundle's defaults
    encoder_options: dict = dataclasses.field(default_factory=dict)  # run-time encoder config: {"precision": "float32"}
    batch_size: int = 128  # photos per batch: encoded (in the encoder's own sub-batches) and decoded together; from
    # 100 photos the decoder's matmuls use every BLAS thread (caption_core/decoders/base.py), 1.1-1.2x faster decoding here
    read_threads: int = 2  # threads that read and resize the next photos while a batch is encoded (local engine)
    engine: str = "local"  # 'local' (this process) or 'ray' (Ray Data: caption_core/ray_engine.py)
    workers: int = 1  # ray: worker actors, each with its own bundle load and cores // workers threads
    rows_per_file: int = 1000  # parquet, local engine: rows per part file (each file is written whole)
    detect: bool = True  # run the COCO detector: its findings in every row, and guidance by them where the decoding asks

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; valid: {list(ENGINES)}")
        if self.batch_size < 1 or self.workers < 1 or self.read_threads < 1 or self.rows_per_file < 1:
            raise ValueError("batch_size, workers, read_threads and rows_per_file must be >= 1")


# -- the workers: one per process (local) or per Ray actor-------------------------------------------------
class CaptionWorker:
    """A bundle loaded once. ``prepare`` reads and resizes one photo (threads may run it); ``run`` captions a batch
    of prepared photos into rows. ``__call__`` is both, over a column batch: what Ray Data's ``map_batches`` calls
    (``image_id``, and ``column``: see ``batch_payloads``)."""

    def __init__(self, bundle: str, strategy: str | None = None, options: dict | None = None,
                 encoder_options: dict | None = None, threads: int | None = None, column: str = "bytes",
                 detect: bool = True):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.column, self.detect = column, detect
        from .captioner import Captioner

        set_threads(threads)
        self.captioner = Captioner.from_bundle(bundle, encoder_options or None)
        if detect:
            self.captioner.detector  # noqa: B018  (built now, under the thread limit, not inside the first batch)
        set_threads(threads)  # an encoder that sets its own threads at load (0 = every core) is held to ours
        self.strategy, self.options = strategy, dict(options or {})
        self.strategy_name = self.captioner.decoding(strategy, None, **self.options)[0].name  # checked before any photo

    def prepare(self, payload: Any, name: str | None = None):
        """-> (array, PIL image or None, detector input or None) for ``run``, or the reason it cannot be read (a
        str, naming it ``name``)."""
        try:
            return self.captioner.prepare(payload, name=name, detect=self.detect)
        except ImageError as exc:
            return str(exc)

    def run(self, ids: Sequence[str], prepared: Sequence[Any]) -> list[dict]:
        """One row per photo: its captions, or the reason it could not be read (``prepare``'s str)."""
        good = [p for p in prepared if not isinstance(p, str)]
        detections = [p[2] for p in good] if self.detect and good and good[0][2] is not None else None
        results = iter(self.captioner.caption_arrays(np.stack([p[0] for p in good]), [p[1] for p in good],
                                                     self.strategy, None, maps=False, detections=detections,
                                                     **self.options) if good else [])
        return [error_row(image_id, self.captioner.name, p) if isinstance(p, str)
                else caption_row(image_id, self.captioner.name, self.strategy_name, next(results))
                for image_id, p in zip(ids, prepared)]

    def __call__(self, batch: dict) -> Any:
        ids = [str(x) for x in batch["image_id"]]
        return rows_table(self.run(ids, [self.prepare(p, i) for p, i in zip(batch_payloads(batch, self.column), ids)]))


class EncodeWorker:
    """An encoder built once (``build_encoder(name, config)``): ``prepare`` -> its (S, S, 3) uint8 array or the reason
    the photo cannot be read; ``run`` -> features (G, D) of the readable ones. ``__call__`` over a column batch
    (``row``, and ``column``: see ``batch_payloads``) -> {row, ok, error, features}: Ray Data's ``map_batches``."""

    def __init__(self, encoder: str, config: dict, threads: int | None = None, column: str = "bytes"):
        from .encoders import build_encoder

        self.column = column
        set_threads(threads)
        self.encoder = build_encoder(encoder, config)
        set_threads(threads)

    @classmethod
    def of(cls, encoder) -> "EncodeWorker":
        """A worker around an encoder already built (the local engine: no second copy of the network)."""
        worker = cls.__new__(cls)
        worker.encoder, worker.column = encoder, "bytes"
        return worker

    def prepare(self, payload: Any):
        from .images import load_image

        try:
            return self.encoder.preprocess([load_image(payload)])[0]  # (S, S, 3)
        except ImageError as exc:
            return str(exc)

    def run(self, prepared: Sequence[Any]) -> np.ndarray:
        good = [p for p in prepared if not isinstance(p, str)]
        if not good:
            return np.zeros((0, self.encoder.output_dim), np.float32)
        return self.encoder.encode_arrays(np.stack(good))  # (G, D)

    def __call__(self, batch: dict) -> dict:
        prepared = [self.prepare(p) for p in batch_payloads(batch, self.column)]
        ok = np.array([not isinstance(p, str) for p in prepared])
        feats = np.zeros((len(prepared), self.encoder.output_dim), np.float32)  # (B, D): unreadable rows zero
        if ok.any():
            feats[ok] = self.run(prepared)
        return {"row": np.asarray(batch["row"], np.int64), "ok": ok,
                "error": np.array([p if isinstance(p, str) else "" for p in prepared], dtype=object), "features": feats}


def batch_payloads(batch: dict, column: str) -> list:
    """What ``load_image`` reads for each row of a column batch: the ``bytes`` column (a file that could not be read
    holds None: then its ``path``, so that the error names it), or a dataset's image column ({bytes, path} cells)."""
    if column == "bytes":
        return [b if b is not None else p for b, p in zip(batch["bytes"], batch["path"])]
    return [image_payload(v) for v in batch[column]]


def set_threads(threads: int | None) -> None:
    """Hold torch (where it is loaded) and the BLAS libraries to ``threads`` threads: two Ray workers on two cores
    use one each."""
    if not threads:
        return
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
