"""Network access for weights and bundles, made to fail fast and clearly when offline.

Without ``HF_HUB_OFFLINE=1`` every Hugging Face Hub call retries for ~23 s before giving up; here a
download is only tried after a 3-second TCP probe of the host says it can be reached, and the
local cache is always tried first.
"""

from __future__ import annotations

import functools
import os
import socket
import urllib.parse


class OfflineError(RuntimeError):
    """Something had to be downloaded, and could not be: no network and nothing cached."""


def env_offline() -> bool:
    """True when the user asked for offline mode (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@functools.lru_cache(maxsize=16)
def host_reachable(url_or_host: str, timeout: float = 3.0) -> bool:
    """Can we open a TCP connection to this host (a URL's own port, else 443) within ``timeout`` seconds?"""
    parsed = urllib.parse.urlparse(url_or_host) if "://" in url_or_host else None
    host = parsed.hostname if parsed else url_or_host
    port = (parsed.port or (80 if parsed.scheme == "http" else 443)) if parsed else 443
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def can_download_from_hub() -> bool:
    return not env_offline() and host_reachable(hf_endpoint())


def snapshot(repo_id: str, what: str, repo_type: str = "model", allow_patterns=None, revision: str | None = None) -> str:
    """Local folder of a Hub repository: from the cache, else downloaded; OfflineError otherwise."""
    from huggingface_hub import snapshot_download

    kwargs = {"repo_type": repo_type, "allow_patterns": allow_patterns, "revision": revision}
    try:
        return snapshot_download(repo_id, local_files_only=True, **kwargs)
    except Exception:
        pass
    if not can_download_from_hub():
        raise OfflineError(
            f"{what} needs '{repo_id}' from the Hugging Face Hub: no internet (or HF_HUB_OFFLINE=1) and it "
            f"is not in the cache; download it once online, or pass a local folder instead"
        )
    return snapshot_download(repo_id, **kwargs)


SPLIT_ALIASES = {"train": ("train",), "dev": ("validation", "val", "dev"), "test": ("test",)}  # Hub split names per split


def examples_from_parquet(parquet: str, folder: str, n: int) -> list[str]:
    """Write the first ``n`` rows' photos of a Hub-schema parquet file (an ``image`` column of encoded
    bytes) into ``folder`` as files, with ``index.json`` listing them; -> their paths."""
    import pyarrow.parquet as pq

    from .files import write_json_atomic

    os.makedirs(folder, exist_ok=True)
    reader = pq.ParquetFile(parquet)
    column = next((c for c in ("image", "img") if c in reader.schema_arrow.names), None)
    if column is None:
        raise ValueError(f"'{os.path.basename(parquet)}' has no image column (columns: {reader.schema_arrow.names})")
    batch = next(reader.iter_batches(batch_size=n, columns=[column]), None)
    names = []
    for i, value in enumerate(batch.column(0).to_pylist() if batch is not None else []):
        data = value.get("bytes") if isinstance(value, dict) else value
        if not data:
            continue
        kind = "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "jpg"
        name = f"{i:03d}.{kind}"
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
        names.append(name)
    write_json_atomic(os.path.join(folder, "index.json"), {"source": os.path.basename(parquet), "photos": names})
    return [os.path.join(folder, name) for name in names]


def cached_examples(folder: str) -> list[str]:
    """The photos a previous ``dataset_examples`` fetched into ``folder`` ([] if none)."""
    import json

    try:
        with open(os.path.join(folder, "index.json"), encoding="utf-8") as f:
            names = json.load(f)["photos"]
    except (OSError, ValueError, KeyError):
        return []
    paths = [os.path.join(folder, name) for name in names]
    return paths if paths and all(os.path.isfile(p) for p in paths) else []


def dataset_examples(repo_id: str, folder: str, n: int = 12, split: str = "test") -> list[str]:
    """The first ``n`` photos of a Hub dataset's split (one parquet file downloaded once, its first rows
    kept in ``folder``): example photos for a server without the dataset. OfflineError when the Hub
    cannot be reached and nothing was fetched before."""
    done = cached_examples(folder)
    if done:
        return done
    if not can_download_from_hub():
        raise OfflineError(f"example photos from '{repo_id}' need the Hugging Face Hub: no internet "
                           "(or HF_HUB_OFFLINE=1); the bundled example photos are shown instead")
    from huggingface_hub import HfApi, hf_hub_download

    files = [f for f in HfApi().list_repo_files(repo_id, repo_type="dataset") if f.endswith(".parquet")]
    for alias in SPLIT_ALIASES[split]:
        chosen = sorted(f for f in files if os.path.basename(f).startswith(f"{alias}-") or f"/{alias}/" in f"/{f}")
        if chosen:
            return examples_from_parquet(hf_hub_download(repo_id, chosen[0], repo_type="dataset"), folder, n)
    raise ValueError(f"dataset '{repo_id}' has no parquet file for its {split} split")
