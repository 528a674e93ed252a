"""The default bundle loaded by a second process while the page's own process starts: the first captions
come from it, until the page's process has loaded the bundle itself.

Why: ``python app.py`` on two cores spent seconds importing gradio, then seconds loading the default bundle
(torch's import, the weights, the encoders' first pass), one after the other. Both are Python holding the GIL
or torch on the same cores, so a thread did not overlap them (``benchmarks/startup_profile.json``); two
processes do. ``app.py`` calls ``HeadStart.start`` before its own ``import gradio``:

1. the child (``python -m caption_core.head_start``) loads the bundle through the same ``BundlePool`` code
   the page uses (checksums, warm-up) and says it is ready;
2. ``CaptionService.caption`` sends it the photo (its RGB pixels, after the page's own checks) while the
   page's pool has not loaded that bundle yet; the child answers with the same ``Captioner.caption``;
3. the pool loads its own copy once the child has been idle for a while (a visitor's captions do not share
   the two cores with that load), then ``close`` stops the child and its memory is returned.

A child that fails or dies is logged and forgotten: the page then loads and serves the bundle itself, as
without it. The child exits when the page's process does (its socket closes; on Linux also by
``PR_SET_PDEATHSIG``).

Messages are frames over a socket pair: lengths, a JSON header, raw bytes (the photo). No pickle.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

from .serving import BundlePool, CaptionService, ServingError

log = logging.getLogger("caption_core.head_start")
_FRAME = struct.Struct("!II")  # header bytes, payload bytes
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the folder holding caption_core


# -- frames ------------------------------------------------------------------------------------------
def _plain(value: Any):
    """json.dumps' fallback: NumPy scalars and arrays as Python numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def send(sock: socket.socket, header: dict, payload: bytes = b"") -> None:
    head = json.dumps(header, default=_plain).encode()
    sock.sendall(_FRAME.pack(len(head), len(payload)) + head)
    if payload:
        sock.sendall(payload)


def _exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise EOFError("the other process closed the connection")
        got += k
    return bytes(buf)


def recv(sock: socket.socket) -> tuple[dict, bytes]:
    n_head, n_payload = _FRAME.unpack(_exactly(sock, _FRAME.size))
    header = json.loads(_exactly(sock, n_head))
    return header, (_exactly(sock, n_payload) if n_payload else b"")


def result_from_dict(d: dict):
    from .captioner import Caption, CaptionResult

    labels = None if d["labels"] is None else [tuple(x) for x in d["labels"]]
    return CaptionResult(**{**d, "captions": [Caption(**c) for c in d["captions"]], "labels": labels})


# -- the page's side -----------------------------------------------------------------------------------
class HeadStart:
    """The page's handle on the child: ``caption`` while it serves, ``close`` once it is not needed.

    ``bundle`` is None until the child says which bundle it loaded (the pool's default: the same listing)."""

    def __init__(self, proc: subprocess.Popen, sock: socket.socket, started: float):
        self.proc, self._sock, self.started = proc, sock, started
        self.bundle: str | None = None
        self.ready_s: float | None = None  # seconds from start to ready
        self.error: str | None = None  # why it stopped serving, if it did
        self.served = 0  # captions it answered
        self._last_used = time.perf_counter()  # when it last finished answering (or became ready)
        self._settled = threading.Event()  # ready, or gone
        self._lock = threading.Lock()  # one request at a time over the socket; close waits for it
        self._closed = False
        threading.Thread(target=self._wait_ready, daemon=True, name="head-start").start()

    @classmethod
    def start(cls, weights_dir: str, hub_bundles: tuple[str, ...] = (), encoder_options: dict | None = None,
              python: str = sys.executable) -> "HeadStart":
        """Start the child now; returns at once (the child loads in the background)."""
        parent, child = socket.socketpair()
        config = {"weights_dir": os.path.abspath(weights_dir), "hub_bundles": list(hub_bundles),
                  "encoder_options": dict(encoder_options or {})}
        env = dict(os.environ)  # caption_core importable wherever the app was started from
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        t0 = time.perf_counter()
        proc = subprocess.Popen([python, "-m", "caption_core.head_start", "--fd", str(child.fileno()),
                                 "--config", json.dumps(config)], pass_fds=(child.fileno(),), env=env,
                                stdin=subprocess.DEVNULL)
        child.close()
        head_start = cls(proc, parent, t0)
        atexit.register(head_start.close)
        return head_start

    def _wait_ready(self) -> None:
        try:
            header, _ = recv(self._sock)
        except (OSError, EOFError, ValueError) as exc:
            self._gone(f"it exited before it was ready ({exc})")
            return
        if "ready" in header:
            self.bundle, self.ready_s = header["ready"], round(time.perf_counter() - self.started, 2)
            self._last_used = time.perf_counter()
            log.info("head start: %s ready in a second process after %.1f s", self.bundle, self.ready_s)
            self._settled.set()
        else:
            self._gone(header.get("failed", f"unexpected message {header}"))

    def _gone(self, why: str) -> None:
        if not self._closed and self.error is None:
            log.warning("head start: stopped (%s); this process loads the bundle itself", why)
        self.error = self.error or why
        self._settled.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the child is ready or gone; True if it is serving."""
        self._settled.wait(timeout)
        return self.serving

    def wait_idle(self, seconds: float) -> None:
        """Return once the child has answered nothing for ``seconds`` (or stopped serving): the page's process
        loads its own copy then, not while a visitor's captions would share the two cores with that load."""
        while self.serving:
            if self._lock.acquire(blocking=False):  # no caption in flight
                idle = time.perf_counter() - self._last_used
                self._lock.release()
                if idle >= seconds:
                    return
                time.sleep(seconds - idle)
            else:
                time.sleep(0.05)

    @property
    def serving(self) -> bool:
        return self.bundle is not None and self.error is None and not self._closed

    def may_serve(self, name: str, default: str | None) -> bool:
        """True while the child serves ``name`` or may still (it loads ``default``, the pool's, and is not ready)."""
        if self.error is not None or self._closed:
            return False
        return name == self.bundle if self.bundle is not None else name == default

    def caption(self, img, strategy: str | None, options: dict | None):
        """``CaptionService.caption_with`` of the RGB PIL image ``img``, in the child; None if it cannot answer
        (failed, closed, or gone meanwhile): the caller then serves the caption itself. Waits for the child to be
        ready. A ServingError (bad decoding options) is raised as the page's own would be."""
        self._settled.wait()
        with self._lock:
            if not self.serving:
                return None
            try:
                send(self._sock, {"op": "caption", "strategy": strategy, "options": options, "mode": img.mode,
                                  "size": list(img.size)}, img.tobytes())
                answer, _ = recv(self._sock)
            except (OSError, EOFError, ValueError) as exc:
                self._gone(f"lost the connection: {exc}")
                return None
            finally:
                self._last_used = time.perf_counter()
        if "error" in answer:
            raise ServingError(answer["error"])
        if "failed" in answer:
            self._gone(answer["failed"])
            return None
        self.served += 1
        return answer["strategy"], answer["options"], result_from_dict(answer["result"])

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child (after the caption it is answering, if any) and wait for it to exit."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self.bundle is not None:
                    send(self._sock, {"op": "stop"})
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes _wait_ready if the child was still loading
            except OSError:
                pass
            self._sock.close()
        self._settled.set()
        if self.bundle is None or self.error is not None:
            self.proc.terminate()  # still loading, or broken: nothing to finish
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        log.info("head start: closed after %d caption(s)", self.served)


# -- the child -----------------------------------------------------------------------------------------
def _die_with_parent() -> None:
    """Linux: this process gets SIGTERM when the process that started it dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def serve(sock: socket.socket, weights_dir: str, hub_bundles: tuple[str, ...] = (),
          encoder_options: dict | None = None) -> None:
    """Load the pool's default bundle, say so, then answer caption requests until told to stop or the
    connection closes."""
    from PIL import Image

    pool = BundlePool(weights_dir, tuple(hub_bundles), encoder_options)
    name = pool.default
    if name is None:
        send(sock, {"failed": f"no bundle in {weights_dir}"})
        return
    try:
        captioner = pool.get(name)
    except ServingError as exc:
        send(sock, {"failed": str(exc)})
        return
    send(sock, {"ready": name})
    while True:
        try:
            header, payload = recv(sock)
        except (EOFError, OSError):
            return
        if header.get("op") == "stop":
            return
        try:
            img = Image.frombytes(header["mode"], tuple(header["size"]), payload)
            strategy, opts, result = CaptionService.caption_with(captioner, img, header["strategy"], header["options"])
            answer = {"strategy": strategy, "options": opts, "result": dataclasses.asdict(result)}
        except ServingError as exc:
            answer = {"error": str(exc)}
        except Exception as exc:  # reported to the page, which then serves the bundle itself
            log.exception("head start: caption failed")
            answer = {"failed": f"{type(exc).__name__}: {exc}"}
        send(sock, answer)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="The app's head-start process (started by app.py, not by hand).")
    p.add_argument("--fd", type=int, required=True, help="the socket to the page's process")
    p.add_argument("--config", required=True, help="JSON: weights_dir, hub_bundles, encoder_options")
    args = p.parse_args(argv)
    _die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s head-start %(name)s: %(message)s")
    cfg = json.loads(args.config)
    sock = socket.socket(fileno=args.fd)
    try:
        serve(sock, cfg["weights_dir"], tuple(cfg.get("hub_bundles", ())), cfg.get("encoder_options"))
    except (BrokenPipeError, ConnectionResetError):  # the page's process is gone
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
