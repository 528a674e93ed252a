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
    """Can we open a TCP connection to this host (port 443) within ``timeout`` seconds?"""
    host = urllib.parse.urlparse(url_or_host).hostname if "://" in url_or_host else url_or_host
    try:
        with socket.create_connection((host, 443), timeout=timeout):
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
