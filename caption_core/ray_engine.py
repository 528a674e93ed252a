"""The batch engine on Ray Data: the same workers as the local engine (``caption_core.batch``), one actor each.

Ray is optional (not in the Space's requirements.txt; ``make test`` installs it): ``pip install "ray[data]"``.

The pipeline: the photo list (``from_items``) or a Hugging Face dataset (``from_huggingface``) -> files read by Ray
Data tasks -> ``map_batches(CaptionWorker)`` on ``workers`` actors (each loads the bundle once and runs
``cpus_per_worker`` threads) -> ``write_json`` / ``write_parquet`` into the output folder (new files each run; a rerun
skips the ids the folder holds). ``ray.init()`` starts a local Ray on this machine; with ``RAY_ADDRESS`` set it joins
that cluster, and ``caption_core`` is shipped to the workers (``runtime_env`` py_modules). On a cluster the bundle
and the photos must be readable at the same paths on every node (a shared file system), or the bundle an
``hf://`` reference.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterator

import numpy as np

from .batch_io import HubImages, Photo, read_rows, row_files
from .batch_workers import BatchConfig, CaptionWorker, EncodeWorker

PACKAGE = os.path.dirname(os.path.abspath(__file__))
READ_CPUS = 0.1  # the reading and writing tasks: a fraction of a core, so that they run beside actors holding the rest
PASSED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "KERAS_HOME", "TF_CPP_MIN_LOG_LEVEL")


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster ``RAY_ADDRESS`` names, else start a local Ray (once per process)."""
    try:
        import ray
    except ImportError:
        raise ImportError('--engine ray needs Ray: pip install "ray[data]" (the local engine needs nothing more)') from None
    if ray.is_initialized():
        return
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    runtime_env = {"py_modules": [PACKAGE], "env_vars": env}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], runtime_env=runtime_env, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, runtime_env=runtime_env,
                 object_store_memory=1 << 30, log_to_driver=True)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True


def worker_cpus(workers: int) -> float:
    """Cores per actor: the cluster's CPUs shared out, less what the reading and writing tasks need."""
    import ray

    total = float(ray.cluster_resources().get("CPU", 1))
    return max(0.5, (total - 2 * READ_CPUS) / workers)


def blocks(n: int, batch_size: int, workers: int) -> int:
    """Blocks to split ``n`` photos into: every actor gets work (one block feeds one actor), a few batches a block
    on large jobs (each block is a scheduling step)."""
    batches = -(-n // batch_size)
    return max(1, min(batches, max(4 * workers, batches // 8)))


def read_bytes(batch: dict) -> dict:
    """Ray Data task: each photo's bytes (None when the file cannot be read: the worker then words the error)."""
    out = []
    for path in batch["path"]:
        try:
            with open(path, "rb") as f:
                out.append(f.read())
        except OSError:
            out.append(None)
    return {**batch, "bytes": np.array(out, dtype=object)}


def ray_caption(cfg: BatchConfig, bundle: str, photos: list[Photo], output: str, fmt: str, dataset: Any = None,
                hub: HubImages | None = None, progress: bool = True) -> dict:
    """Caption ``photos`` on Ray Data into the folder ``output`` (JSON lines or Parquet files). -> summary."""
    import ray

    if os.path.isfile(output):
        raise ValueError(f"output '{output}' is a file (the local engine's JSON lines): Ray writes a folder; pass "
                         "another --output, or --engine local to add to that file")
    init_ray()
    ray.data.DataContext.get_current().enable_progress_bars = progress
    t0 = time.perf_counter()
    if not photos:
        return {"photos": 0, "errors": 0, "seconds": 0.0, "photos_per_s": 0.0}
    bundle = os.path.abspath(bundle) if os.path.isdir(bundle) else bundle
    cpus = worker_cpus(cfg.workers)
    threads = max(1, round(cpus))
    # at least four batches an actor: with 128-photo batches, 300 photos made 3 blocks, two of them on one of two actors
    bs = max(1, min(cfg.batch_size, -(-len(photos) // (4 * cfg.workers))))
    kwargs = {"bundle": bundle, "strategy": cfg.strategy, "options": cfg.options,
              "encoder_options": cfg.encoder_options, "threads": threads, "detect": cfg.detect}
    parts = []
    files = [p for p in photos if p.index is None]
    if files:
        ds = ray.data.from_items([{"image_id": p.image_id, "path": p.path} for p in files],
                                 override_num_blocks=blocks(len(files), bs, cfg.workers))
        ds = ds.map_batches(read_bytes, batch_size=bs, num_cpus=READ_CPUS)
        parts.append(ds.map_batches(CaptionWorker, fn_constructor_kwargs=kwargs, batch_size=bs,
                                    concurrency=cfg.workers, num_cpus=cpus))
    rows = [p for p in photos if p.index is not None]
    if rows:
        sub = dataset.select([p.index for p in rows]).select_columns([hub.image_column])
        sub = sub.add_column("image_id", [p.image_id for p in rows])
        ds = ray.data.from_huggingface(sub).repartition(blocks(len(rows), bs, cfg.workers))
        parts.append(ds.map_batches(CaptionWorker, fn_constructor_kwargs={**kwargs, "column": hub.image_column},
                                    batch_size=bs, concurrency=cfg.workers, num_cpus=cpus))
    ds = parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
    earlier = set(row_files(output))  # an earlier run's files: not read again to count this run's rows
    write = ds.write_parquet if fmt == "parquet" else ds.write_json
    write(output, ray_remote_args={"num_cpus": READ_CPUS})
    seconds = time.perf_counter() - t0
    written = [r for path in row_files(output) if path not in earlier for r in read_rows(path, ["image_id", "error"])]
    return {"photos": len(written), "errors": sum(r["error"] is not None for r in written),
            "seconds": round(seconds, 2), "photos_per_s": round(len(written) / max(seconds, 1e-9), 2),
            "workers": cfg.workers, "cpus_per_worker": round(cpus, 2)}


def ray_features(encoder: str, config: dict, rows: list[int], paths: list[str], batch_size: int,
                 workers: int) -> Iterator[dict]:
    """Features of ``paths`` (dataset rows ``rows``) on Ray Data, in order: batches {row, ok, error, features}
    for the feature cache (``training.features``), which records each batch as it arrives (a killed run resumes)."""
    import ray

    init_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # the cache records a prefix of rows as done
    cpus = worker_cpus(workers)
    ds = ray.data.from_items([{"row": r, "path": p} for r, p in zip(rows, paths)],
                             override_num_blocks=blocks(len(rows), batch_size, workers))
    ds = ds.map_batches(read_bytes, batch_size=batch_size, num_cpus=READ_CPUS)
    ds = ds.map_batches(EncodeWorker, fn_constructor_kwargs={"encoder": encoder, "config": config,
                                                                "threads": max(1, round(cpus))},
                        batch_size=batch_size, concurrency=workers, num_cpus=cpus)
    yield from ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2)
