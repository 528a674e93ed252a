"""What a batch job reads and writes: its photos (folders, globs, file lists, Hugging Face image datasets), its rows
(one per photo: captions and scores, what guided them, what the detector found, or why there is no caption), and
the outputs that hold them (JSON lines or Parquet, resumable). Both engines (``caption_core.batch``,
``caption_core.ray_engine``) write through these.

Output rows (``ROW_FIELDS``): image_id, bundle, strategy, caption (the best), captions [{text, score, log_prob}]
best first, guidance (the word required, its class and probability, the words banned, who put it in: classifier,
detector or both; null when unguided), imagenet_top5 [{label, probability}] where the encoder has a classifier,
objects (what the COCO detector saw: detections [{category, score, box (x0, y0, x1, y1) as fractions}], counts
[{category, count}], main; null without the detector), error (null, or why there is no caption).
"""

from __future__ import annotations

import dataclasses
import glob as globlib
import json
import logging
import os
import time
import uuid
from typing import Any, Iterator, Sequence

log = logging.getLogger("caption_core.batch")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
FORMATS = ("jsonl", "parquet")
ROW_FIELDS = ("image_id", "bundle", "strategy", "caption", "captions", "guidance", "imagenet_top5", "objects", "error")


# -- what to read ----------------------------------------------------------------------------------------------
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


# -- the rows ---------------------------------------------------------------------------------------------------
def caption_row(image_id: str, bundle: str, strategy: str, r) -> dict:
    return {"image_id": image_id, "bundle": bundle, "strategy": strategy,
            "caption": r.captions[0].text if r.captions else "",
            "captions": [{"text": c.text, "score": round(float(c.score), 4), "log_prob": round(float(c.log_prob), 4)}
                         for c in r.captions],
            "guidance": guidance_cell(r.guidance),
            "imagenet_top5": [{"label": label, "probability": round(float(p), 4)} for label, p in r.labels or []],
            "objects": objects_cell(r.objects), "error": None}


def objects_cell(o: dict | None) -> dict | None:
    """``CaptionResult.objects`` as a row holds it (counts as a list: one Arrow schema for every row)."""
    if o is None:
        return None
    return {"detections": [{"category": d["category"], "score": float(d["score"]), "box": [float(v) for v in d["box"]]}
                           for d in o["detections"]],
            "counts": [{"category": c, "count": int(n)} for c, n in o["counts"].items()], "main": o.get("main")}


def guidance_cell(g: dict | None) -> dict | None:
    if not g:
        return None
    return {"word": g.get("word"), "probability": g.get("probability"), "top_class": g.get("top_class"),
            "class_probability": g.get("class_probability"), "required_words": list(g.get("required_words", [])),
            "banned_words": list(g.get("banned_words", [])), "met": bool(g.get("met", False)),
            "source": g.get("source"), "category": g.get("category") or None, "count": int(g.get("count") or 0)}


def error_row(image_id: str, bundle: str, reason: str) -> dict:
    return {"image_id": image_id, "bundle": bundle, "strategy": None, "caption": None, "captions": [],
            "guidance": None, "imagenet_top5": [], "objects": None, "error": reason}


def row_schema():
    """The Arrow schema of every output row (Parquet, and Ray's blocks)."""
    import pyarrow as pa

    return pa.schema([
        ("image_id", pa.string()), ("bundle", pa.string()), ("strategy", pa.string()), ("caption", pa.string()),
        ("captions", pa.list_(pa.struct([("text", pa.string()), ("score", pa.float64()), ("log_prob", pa.float64())]))),
        ("guidance", pa.struct([("word", pa.string()), ("probability", pa.float64()), ("top_class", pa.string()),
                                ("class_probability", pa.float64()), ("required_words", pa.list_(pa.string())),
                                ("banned_words", pa.list_(pa.string())), ("met", pa.bool_()), ("source", pa.string()),
                                ("category", pa.string()), ("count", pa.int64())])),
        ("imagenet_top5", pa.list_(pa.struct([("label", pa.string()), ("probability", pa.float64())]))),
        ("objects", pa.struct([("detections", pa.list_(pa.struct([("category", pa.string()), ("score", pa.float64()),
                                                                  ("box", pa.list_(pa.float64()))]))),
                               ("counts", pa.list_(pa.struct([("category", pa.string()), ("count", pa.int64())]))),
                               ("main", pa.string())])),
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
