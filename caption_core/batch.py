"""Many photos through one bundle: a folder, a glob, a file list or a Hugging Face image dataset -> JSON lines or
Parquet, one row per photo (its captions and scores, what guided them, or the reason it could not be read).

    python -m caption_core batch photos/ --output captions.jsonl [--bundle B] [--engine local|ray] [--workers N]
    python -m caption_core batch --hf-dataset NAME --split test --image-column image --output out.parquet

- **Batched**: photos are read and resized in threads while the encoder runs; the decoder decodes a whole batch at
  once (benchmarks/batch_caption.py measures both against the encoder alone). Decoding batch k in a thread while
  batch k+1 was encoded was measured 1.5-2.5x slower here (torch's threads and the decoder fought over 2 cores).
- **Resumable**: rows are written as each batch ends (JSON lines appended and synced; Parquet as part files, each
  renamed into place when complete); a rerun reads the image ids the output already holds and skips them. A line
  cut by a kill is dropped, and a Parquet file that cannot be read is set aside as ``*.incomplete``: its photos are
  captioned again.
- **Bad photos** become rows with ``error`` set (the reason, as ``load_image`` words it); the job goes on.
- **Engines**: ``local`` (this process) or ``ray`` (Ray Data: ``caption_core/ray_engine.py``; one worker actor per
  bundle load, reading and writing through Ray Data, locally or on the cluster that ``RAY_ADDRESS`` names). Both run
  the same ``CaptionWorker``, so they write the same captions.

``training features`` runs the same engines with an ``EncodeWorker`` (features instead of captions).

Output rows (``ROW_FIELDS``): image_id, bundle, strategy, caption (the best), captions [{text, score, log_prob}]
best first, guidance (the word required, its class and probability, the words banned; null when unguided),
imagenet_top5 [{label, probability}] where the encoder has a classifier, error (null, or why there is no caption).
"""

from __future__ import annotations

import collections
import dataclasses
import glob as globlib
import json
import logging
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .config import Config
from .images import ImageError

log = logging.getLogger("caption_core.batch")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
FORMATS = ("jsonl", "parquet")
ENGINES = ("local", "ray")
ROW_FIELDS = ("image_id", "bundle", "strategy", "caption", "captions", "guidance", "imagenet_top5", "error")


@dataclasses.dataclass(frozen=True)
class BatchConfig(Config):
    bundle: str | None = None  # bundle folder or hf://owner/repo (None: the best bundle in weights/, as the app)
    strategy: str | None = None  # decoding strategy (None: the bundle's default)
    options: dict = dataclasses.field(default_factory=dict)  # decoding options over the bundle's defaults
    encoder_options: dict = dataclasses.field(default_factory=dict)  # run-time encoder config: {"precision": "float32"}
    batch_size: int = 128  # photos per batch: encoded (in the encoder's own sub-batches) and decoded together; from
    # 100 photos the decoder's matmuls use every BLAS thread (caption_core/decoder.py), 1.1-1.2x faster decoding here
    read_threads: int = 2  # threads that read and resize the next photos while a batch is encoded (local engine)
    engine: str = "local"  # 'local' (this process) or 'ray' (Ray Data: caption_core/ray_engine.py)
    workers: int = 1  # ray: worker actors, each with its own bundle load and cores // workers threads
    rows_per_file: int = 1000  # parquet, local engine: rows per part file (each file is written whole)

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; valid: {list(ENGINES)}")
        if self.batch_size < 1 or self.workers < 1 or self.read_threads < 1 or self.rows_per_file < 1:
            raise ValueError("batch_size, workers, read_threads and rows_per_file must be >= 1")


# -- what to read ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Photo:
    image_id: str  # the row's key: the path relative to the source's folder (or as given), or 'split/index'
    path: str | None = None  # a file to read
    index: int | None = None  # or a row of a Hugging Face dataset


def _relative_id(path: str, root: str) -> str:
    rel = os.path.relpath(path, root)
    return path if rel.startswith(os.pardir) else rel.replace(os.sep, "/")


def list_photos(inputs: Sequence[str]) -> list[Photo]:
    """Folders (every image file below them, by extension), globs (``'photos/**/*.jpg'``), file lists (``.txt``:
    one path per line, relative to the list's folder; ``#`` comments) and single files -> photos, sorted within each
    input, each listed once. A folder's photos are named by their path inside it, others as given."""
    photos: dict[str, Photo] = {}

    def add(path: str, image_id: str) -> None:
        photos.setdefault(image_id, Photo(image_id, os.path.abspath(path)))

    for item in inputs:
        if os.path.isdir(item):
            for folder, dirs, files in os.walk(item):
                dirs.sort()
                for f in sorted(files):
                    if f.lower().endswith(IMAGE_EXTENSIONS):
                        path = os.path.join(folder, f)
                        add(path, _relative_id(path, item))
        elif any(c in item for c in "*?["):
            matches = sorted(p for p in globlib.glob(item, recursive=True) if os.path.isfile(p))
            if not matches:
                raise FileNotFoundError(f"no file matches {item!r}")
            for path in matches:
                add(path, path)
        elif item.endswith(".txt") and os.path.isfile(item):
            root = os.path.dirname(os.path.abspath(item))
            with open(item, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        add(line if os.path.isabs(line) else os.path.join(root, line), line)
        elif os.path.isfile(item):
            add(item, item)
        else:
            raise FileNotFoundError(f"no such file, folder or glob: {item!r}")
    return list(photos.values())


@dataclasses.dataclass(frozen=True)
class HubImages:
    """A Hugging Face image dataset: a Hub name (the cache first; offline: a clear error), a folder written by
    ``Dataset.save_to_disk``, or any builder ``datasets.load_dataset`` takes with ``data_dir`` (``imagefolder``)."""

    name: str  # 'owner/dataset', a save_to_disk folder, or a builder name such as 'imagefolder'
    split: str = "test"  # the split to caption
    image_column: str = "image"  # the column holding the photos
    id_column: str | None = None  # a column naming each photo (default: 'split/row')
    data_dir: str | None = None  # for builders such as 'imagefolder'

    def load(self):
        """-> a ``datasets.Dataset`` whose image column yields undecoded {bytes, path} (bad photos then reach the
        worker, which turns them into error rows, instead of failing inside ``datasets``)."""
        import datasets

        from .hub import can_download_from_hub

        if any(os.path.isfile(os.path.join(self.name, f)) for f in ("dataset_info.json", "dataset_dict.json")):
            ds = datasets.load_from_disk(self.name)
            if isinstance(ds, datasets.DatasetDict):
                ds = self._split_of(ds)
        else:
            kwargs = {"data_dir": self.data_dir} if self.data_dir else {}
            remote = not os.path.isdir(self.name) and "/" in self.name and not self.data_dir
            try:
                ds = datasets.load_dataset(self.name, split=self.split, **kwargs)
            except Exception as exc:
                if remote and not can_download_from_hub():
                    from .hub import OfflineError

                    raise OfflineError(f"dataset '{self.name}' needs the Hugging Face Hub: no internet (or "
                                       "HF_HUB_OFFLINE=1) and it is not in the cache; run once online, or pass a "
                                       "folder saved with Dataset.save_to_disk") from None
                raise ValueError(f"dataset '{self.name}' [{self.split}] cannot be loaded: {exc}") from None
        if self.image_column not in ds.column_names:
            raise ValueError(f"dataset '{self.name}' has no column {self.image_column!r}; its columns: {ds.column_names}")
        if self.id_column and self.id_column not in ds.column_names:
            raise ValueError(f"dataset '{self.name}' has no column {self.id_column!r}; its columns: {ds.column_names}")
        feature = ds.features[self.image_column]
        if type(feature).__name__ == "Image":
            ds = ds.cast_column(self.image_column, datasets.Image(decode=False))
        return ds

    def _split_of(self, dd):
        if self.split not in dd:
            raise ValueError(f"dataset '{self.name}' has no split {self.split!r}; its splits: {list(dd)}")
        return dd[self.split]

    def photos(self, ds) -> list[Photo]:
        ids = ds[self.id_column] if self.id_column else [f"{self.split}/{i}" for i in range(len(ds))]
        return [Photo(str(image_id), index=i) for i, image_id in enumerate(ids)]


def image_payload(value: Any) -> Any:
    """A dataset's image cell -> what ``load_image`` reads: bytes or a path ({bytes, path} dicts), or the value."""
    if isinstance(value, dict):
        return value.get("bytes") or value.get("path")
    return value


# -- the workers: one per process (local) or per Ray actor --------------------------------------------------
class CaptionWorker:
    """A bundle loaded once. ``prepare`` reads and resizes one photo (threads may run it); ``run`` captions a batch
    of prepared photos into rows. ``__call__`` is both, over a column batch: what Ray Data's ``map_batches`` calls
    (``image_id``, and ``column``: see ``batch_payloads``)."""

    def __init__(self, bundle: str, strategy: str | None = None, options: dict | None = None,
                 encoder_options: dict | None = None, threads: int | None = None, column: str = "bytes"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.column = column
        from .captioner import Captioner

        set_threads(threads)
        self.captioner = Captioner.from_bundle(bundle, encoder_options or None)
        set_threads(threads)  # an encoder that sets its own threads at load (0 = every core) is held to ours
        self.strategy, self.options = strategy, dict(options or {})
        self.strategy_name = self.captioner.decoding(strategy, None, **self.options)[0].name  # checked before any photo

    def prepare(self, payload: Any, name: str | None = None):
        """-> (array, PIL image or None) for ``run``, or the reason it cannot be read (a str, naming it ``name``)."""
        try:
            return self.captioner.prepare(payload, name=name)
        except ImageError as exc:
            return str(exc)

    def run(self, ids: Sequence[str], prepared: Sequence[Any]) -> list[dict]:
        """One row per photo: its captions, or the reason it could not be read (``prepare``'s str)."""
        good = [p for p in prepared if not isinstance(p, str)]
        results = iter(self.captioner.caption_arrays(np.stack([p[0] for p in good]), [p[1] for p in good],
                                                     self.strategy, None, maps=False, **self.options) if good else [])
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


def caption_row(image_id: str, bundle: str, strategy: str, r) -> dict:
    return {"image_id": image_id, "bundle": bundle, "strategy": strategy,
            "caption": r.captions[0].text if r.captions else "",
            "captions": [{"text": c.text, "score": round(float(c.score), 4), "log_prob": round(float(c.log_prob), 4)}
                         for c in r.captions],
            "guidance": guidance_cell(r.guidance),
            "imagenet_top5": [{"label": label, "probability": round(float(p), 4)} for label, p in r.labels or []],
            "error": None}


def guidance_cell(g: dict | None) -> dict | None:
    if not g:
        return None
    return {"word": g.get("word"), "probability": g.get("probability"), "top_class": g.get("top_class"),
            "class_probability": g.get("class_probability"), "required_words": list(g.get("required_words", [])),
            "banned_words": list(g.get("banned_words", [])), "met": bool(g.get("met", False))}


def error_row(image_id: str, bundle: str, reason: str) -> dict:
    return {"image_id": image_id, "bundle": bundle, "strategy": None, "caption": None, "captions": [],
            "guidance": None, "imagenet_top5": [], "error": reason}


def row_schema():
    """The Arrow schema of every output row (Parquet, and Ray's blocks)."""
    import pyarrow as pa

    return pa.schema([
        ("image_id", pa.string()), ("bundle", pa.string()), ("strategy", pa.string()), ("caption", pa.string()),
        ("captions", pa.list_(pa.struct([("text", pa.string()), ("score", pa.float64()), ("log_prob", pa.float64())]))),
        ("guidance", pa.struct([("word", pa.string()), ("probability", pa.float64()), ("top_class", pa.string()),
                                ("class_probability", pa.float64()), ("required_words", pa.list_(pa.string())),
                                ("banned_words", pa.list_(pa.string())), ("met", pa.bool_())])),
        ("imagenet_top5", pa.list_(pa.struct([("label", pa.string()), ("probability", pa.float64())]))),
        ("error", pa.string())])


def rows_table(rows: list[dict]):
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=row_schema())


# -- where rows go -----------------------------------------------------------------------------------------------
def output_format(output: str, fmt: str | None = None) -> str:
    """'jsonl' or 'parquet': ``fmt``, else from the name (``.parquet`` -> parquet; anything else: JSON lines)."""
    fmt = fmt or ("parquet" if output.rstrip("/").endswith(".parquet") else "jsonl")
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; valid: {list(FORMATS)}")
    return fmt


def row_files(output: str) -> list[str]:
    """The files of rows an output holds: itself (a JSON-lines file), or the row files in its folder."""
    if os.path.isfile(output):
        return [output]
    if not os.path.isdir(output):
        return []
    return sorted(os.path.join(output, f) for f in os.listdir(output)
                  if f.endswith((".json", ".jsonl", ".parquet")) and not f.startswith("."))


def read_rows(output: str, columns: Sequence[str] | None = None) -> Iterator[dict]:
    """Every row an output holds (a JSON-lines file, or a folder of JSON-lines / Parquet files from either engine).
    A last line cut by a kill is skipped; an unreadable Parquet file is renamed ``*.incomplete`` (its photos are
    then captioned again by a rerun)."""
    for path in row_files(output):
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(path, columns=list(columns) if columns else None)
            except Exception as exc:  # a file cut by a kill has no footer
                log.warning("%s cannot be read (%s): set aside as .incomplete; its photos will be captioned again",
                            path, exc)
                os.replace(path, path + ".incomplete")
                continue
            yield from table.to_pylist()
        else:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # the line a kill cut short
                    yield {k: row.get(k) for k in columns} if columns else row


def done_ids(output: str) -> set[str]:
    """The image ids an output already holds (captions and error rows alike): what a rerun skips."""
    return {str(r["image_id"]) for r in read_rows(output, ["image_id"])}


class JsonlWriter:
    """Rows appended to one file, flushed and synced after every batch; a line cut by a kill is removed first."""

    def __init__(self, path: str):
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        if os.path.exists(path):
            _truncate_partial_line(path)
        self.f = open(path, "a", encoding="utf-8")

    def write(self, rows: list[dict]) -> None:
        self.f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


def _truncate_partial_line(path: str, chunk: int = 1 << 16) -> None:
    """Cut the file after its last newline, reading backwards from the end (an output may be gigabytes)."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        pos = size
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            i = f.read(pos - start).rfind(b"\n")
            if i >= 0:
                end = start + i + 1
                break
            pos = start
        else:
            end = 0
        if end != size:
            f.truncate(end)


class ParquetWriter:
    """Rows gathered into part files of ``rows_per_file`` rows under a folder; each written to a hidden name and
    renamed into place, so a file either holds whole rows or is not there."""

    def __init__(self, folder: str, rows_per_file: int = 1000):
        os.makedirs(folder, exist_ok=True)
        self.folder, self.rows_per_file, self.pending, self.n = folder, rows_per_file, [], 0
        self.run = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"  # a rerun never reuses a name

    def write(self, rows: list[dict]) -> None:
        self.pending.extend(rows)
        if len(self.pending) >= self.rows_per_file:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        import pyarrow.parquet as pq

        name = f"part-{self.run}-{self.n:05d}.parquet"
        tmp = os.path.join(self.folder, "." + name + ".tmp")
        pq.write_table(rows_table(self.pending), tmp)
        os.replace(tmp, os.path.join(self.folder, name))
        self.pending, self.n = [], self.n + 1

    def close(self) -> None:
        self._flush()


def open_writer(output: str, fmt: str, rows_per_file: int):
    if fmt == "jsonl":
        if os.path.isdir(output):
            raise ValueError(f"output '{output}' is a folder (a Ray run's?): the local engine appends JSON lines to "
                             "a file; pass a file name, or --engine ray to add to that folder")
        return JsonlWriter(output)
    return ParquetWriter(output, rows_per_file)


# -- the local engine ----------------------------------------------------------------------------------------------
def prefetch(pool, fn: Callable, items: Iterable, ahead: int) -> Iterator:
    """``map(fn, items)`` in order, run in ``pool`` at most ``ahead`` items in advance (bounded memory: ``pool.map``
    would read a whole dataset into memory when reading outpaces the encoder)."""
    queue: collections.deque = collections.deque()
    for item in items:
        queue.append(pool.submit(fn, item))
        if len(queue) > ahead:
            yield queue.popleft().result()
    while queue:
        yield queue.popleft().result()


def local_batches(prepare: Callable, payloads: Iterable, n: int, batch_size: int, threads: int) -> Iterator[list]:
    """Prepared items, ``batch_size`` at a time, in order: ``prepare`` runs in ``threads`` reader threads, up to four
    batches ahead of the consumer."""
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="read") as pool:
        pending = prefetch(pool, prepare, payloads, ahead=4 * batch_size)
        for begin in range(0, n, batch_size):
            yield [next(pending) for _ in range(min(batch_size, n - begin))]


class Progress:
    """A progress bar with photos/s (tqdm on stderr), and the counts for the summary."""

    def __init__(self, total: int, done_before: int, show: bool, desc: str = "caption"):
        self.t0, self.count, self.errors = time.perf_counter(), 0, 0
        self.bar = None
        if show:
            from tqdm import tqdm

            self.bar = tqdm(total=total + done_before, initial=done_before, unit="photo", desc=desc,
                            mininterval=1.0, file=sys.stderr)

    def update(self, n: int, errors: int = 0) -> None:
        self.count, self.errors = self.count + n, self.errors + errors
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(errors=self.errors)

    @property
    def rate(self) -> float:
        return self.count / max(time.perf_counter() - self.t0, 1e-9)

    def close(self) -> dict:
        if self.bar is not None:
            self.bar.close()
        return {"photos": self.count, "errors": self.errors, "seconds": round(time.perf_counter() - self.t0, 2),
                "photos_per_s": round(self.rate, 2)}


def run_batch(cfg: BatchConfig, photos: list[Photo], output: str, fmt: str | None = None, dataset: Any = None,
              hub: HubImages | None = None, progress: bool = True, stop_after: int | None = None) -> dict:
    """Caption ``photos`` into ``output``, skipping the ids it already holds. ``dataset``: the loaded Hugging Face
    dataset that ``Photo.index`` points into (``hub`` describes it). ``stop_after``: end after that many photos
    (tests use it to stand for a kill). -> summary {photos, errors, skipped, seconds, photos_per_s, output}."""
    fmt = output_format(output, fmt)
    done = done_ids(output)
    todo = [p for p in photos if p.image_id not in done]
    skipped = len(photos) - len(todo)
    todo = todo[:stop_after]
    bundle = cfg.bundle or default_bundle_path()
    if cfg.engine == "ray":
        from .ray_engine import ray_caption

        summary = ray_caption(cfg, bundle, todo, output, fmt, dataset=dataset, hub=hub, progress=progress)
        return {**summary, "skipped": skipped, "output": output}
    worker = CaptionWorker(bundle, cfg.strategy, cfg.options, cfg.encoder_options)

    def payload(p: Photo):
        return p.path if p.index is None else image_payload(dataset[p.index][hub.image_column])

    writer = open_writer(output, fmt, cfg.rows_per_file)
    bar = Progress(len(todo), len(done), progress)
    try:
        batches = local_batches(lambda p: worker.prepare(payload(p), p.image_id), todo, len(todo), cfg.batch_size, cfg.read_threads)

        begin = 0
        for prepared in batches:  # read ahead in threads; encode, then decode, in this one
            rows = worker.run([p.image_id for p in todo[begin:begin + len(prepared)]], prepared)
            writer.write(rows)
            begin += len(prepared)
            bar.update(len(rows), sum(r["error"] is not None for r in rows))
    finally:
        writer.close()
        summary = bar.close()
    return {**summary, "skipped": skipped, "output": output}


def default_bundle_path() -> str:
    from .__main__ import DEFAULT_WEIGHTS, default_bundle

    ref = default_bundle()
    if ref is None:
        raise FileNotFoundError(f"no bundle in {DEFAULT_WEIGHTS}; pass --bundle DIR or build one with: "
                                "python -m training build")
    return ref


# -- the command ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    import argparse

    from .config import parse_option
    from .decoding import add_decoding_arguments, decoding_arguments

    p = argparse.ArgumentParser(prog="python -m caption_core batch", description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="*", help="folders, globs (quoted), .txt file lists, image files")
    p.add_argument("--output", "-o", required=True, help="a .jsonl file, or a .parquet folder (ray: always a folder)")
    p.add_argument("--format", choices=FORMATS, help="default: from --output (.parquet -> parquet, else jsonl)")
    p.add_argument("--hf-dataset", help="a Hugging Face image dataset: Hub name, save_to_disk folder, or a builder "
                                        "such as imagefolder (with --data-dir)")
    p.add_argument("--split", default="test", help="--hf-dataset split (default: %(default)s)")
    p.add_argument("--image-column", default="image", help="--hf-dataset image column (default: %(default)s)")
    p.add_argument("--id-column", help="--hf-dataset column naming each photo (default: split/row)")
    p.add_argument("--data-dir", help="--hf-dataset builder's data_dir")
    p.add_argument("--bundle", help="bundle folder or hf://owner/repo (default: the best bundle in weights/)")
    p.add_argument("--engine", choices=ENGINES, default="local", help="default: %(default)s")
    p.add_argument("--workers", type=int, default=1, help="ray: worker actors (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=BatchConfig.batch_size, help="default: %(default)s")
    p.add_argument("--read-threads", type=int, default=BatchConfig.read_threads, help="default: %(default)s")
    p.add_argument("--encoder-option", dest="encoder_options", type=parse_option, action="append", default=[],
                   metavar="KEY=VALUE", help="encoder config field, repeatable: precision=float32")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_decoding_arguments(p)
    args = p.parse_args(argv)
    if not args.inputs and not args.hf_dataset:
        p.error("give folders, globs, file lists or image files, or --hf-dataset NAME")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .bundle import BundleError
    from .hub import OfflineError

    strategy, overrides = decoding_arguments(args)
    try:
        cfg = BatchConfig(bundle=args.bundle, strategy=strategy, options=overrides,
                          encoder_options=dict(args.encoder_options), batch_size=args.batch_size,
                          read_threads=args.read_threads, engine=args.engine, workers=args.workers)
        photos, dataset, hub = list_photos(args.inputs), None, None
        if args.hf_dataset:
            hub = HubImages(args.hf_dataset, args.split, args.image_column, args.id_column, args.data_dir)
            dataset = hub.load()
            photos += hub.photos(dataset)
        summary = run_batch(cfg, photos, args.output, args.format, dataset, hub, progress=not args.no_progress)
    except (BundleError, OfflineError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
