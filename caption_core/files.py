"""Small file helpers every part of the library uses: checksums and atomic JSON writes.

Kept apart from ``bundle`` so that the encoders, the reference index and the Hub code can use them
without importing the bundle module (which imports the decoder and, through ``load_bundle``, the
encoders: an import circle).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any


def sha256_file(path: str) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json_atomic(path: str, data: Any) -> None:
    """Write ``data`` as indented UTF-8 JSON to a temporary file beside ``path``, fsync it, rename it into
    place: a crash leaves the old file or the new one, never half of one."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp made it private
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
