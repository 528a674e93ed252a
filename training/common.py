"""Small helpers shared by the training commands: seeds, machine facts, atomic files, progress."""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
import time

import numpy as np


def set_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    import keras

    keras.utils.set_random_seed(seed)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "python": platform.python_version(),
            "platform": platform.platform()}


def versions() -> dict:
    """Installed versions of the packages that decide the numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("tensorflow-cpu", "tensorflow", "keras", "torch", "transformers", "numpy", "pillow", "pycocoevalcap"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def command_line() -> str:
    return " ".join(["python -m training", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith(("__main__.py", "training")) \
        else " ".join(sys.argv)


def write_json(path: str, data) -> None:
    from caption_core.files import write_json_atomic

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_json_atomic(path, data)


def read_json(path: str, default=None):
    if not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_keras_atomic(model, path: str) -> None:
    """model.save to a temporary name, then rename: a kill never leaves a half-written file."""
    tmp = path + ".tmp.keras"
    model.save(tmp)
    os.replace(tmp, path)


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def check_resume(state: dict | None, cfg, log) -> dict | None:
    """A resumed run's ``state`` (its ``config`` recorded) against this run's config ``cfg``: the same, or only
    ``epochs`` changed (the run extended or cut short: recorded under ``extended``); anything else raises."""
    if state is None or state.get("config") == cfg.to_dict():
        return state
    made = dict(state.get("config") or {})
    try:  # as a config again: JSON's lists are tuples again, fields added since take their defaults
        made_again = type(cfg).from_dict({**made, "epochs": cfg.epochs}).to_dict()
    except (TypeError, ValueError):
        made_again = None
    if made_again != cfg.to_dict():
        raise ValueError(f"resume: the run in {cfg.out} was made with other options; use the same ones (only "
                         "--epochs may change) or another --out (or --no-resume)")
    log.info("resuming with %d epochs at most instead of %d", cfg.epochs, made.get("epochs"))
    state["extended"] = state.get("extended", []) + [{"epochs_done": state["epochs_done"], "from": made.get("epochs"),
                                                      "to": cfg.epochs}]
    state["config"] = cfg.to_dict()
    return state
