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

The pieces: ``caption_core.batch_io`` (photos, rows, outputs), ``caption_core.batch_workers`` (the job's config
and the workers), ``caption_core.ray_engine``; this module runs the local engine and the command.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator

from .batch_io import (FORMATS, ROW_FIELDS, HubImages, Photo, done_ids, image_payload, list_photos,  # noqa: F401
                       open_writer, output_format, read_rows, row_files)
from .batch_workers import ENGINES, BatchConfig, CaptionWorker, EncodeWorker  # noqa: F401


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
    worker = CaptionWorker(bundle, cfg.strategy, cfg.options, cfg.encoder_options, detect=cfg.detect)

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
    from .bundle import DEFAULT_WEIGHTS, default_bundle

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

    p = argparse.ArgumentParser(prog="python -m caption_core batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--no-detect", action="store_true", help="no COCO detector: rows without objects, guidance by the "
                                                         "classifier alone (faster)")
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
                          read_threads=args.read_threads, engine=args.engine, workers=args.workers,
                          detect=not args.no_detect)
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
