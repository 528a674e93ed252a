"""Serving several bundles from one process: what a page, an HTTP server, a batch job or a notebook needs
besides the model itself. No web framework here; the Gradio page (``app.py``) only lays out and formats.

- ``BundlePool``: the bundles found (a weights folder, Hub references), each loaded once, lazily, under its
  own lock (a request waits only for the bundle it asked for); loads are done one at a time, so each
  bundle's memory figure is its own; readiness, a status line and a status table.
- ``Examples``: the example photos a page shows, and where they come from.
- ``CaptionService``: the pool, the reference captions and the examples together, with what a user asks:
  ``caption``, ``compare``, ``explain``, ``card``. Its answers are plain data; its errors are
  ``ServingError`` with messages fit to show a user (no server paths).

When the bundles load is one policy, ``ServiceConfig.preload``: ``default`` (the best bundle on dev at start,
each other one when it is first asked for: a visitor of the first minute is never slowed by loading they did
not ask for; ``benchmarks/first_minute.py`` measured it), ``all`` (the others too, once a first caption was
served or ``quiet_s`` passed), ``none``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import threading
import time
from typing import Any

import numpy as np
from PIL import Image

from .bundle import BundleError, best_first, list_baselines, list_bundles, read_manifest, resolve_bundle, test_metrics
from .captioner import Captioner
from .config import Config
from .decoding import LOOKAHEAD
from .encoders import ENCODERS, supported_options
from .hub import cached_examples, dataset_examples
from .images import ImageError, ImageLimits, load_image
from .references import References

log = logging.getLogger("caption_core.serving")
PRELOAD = ("default", "all", "none")
STATES = ("not loaded", "loading", "ready", "failed")


class ServingError(ValueError):
    """What went wrong, in words fit to show the user who asked (never a server path)."""


@dataclasses.dataclass(frozen=True)
class ServiceConfig(Config):
    weights_dir: str = "weights"  # folder of bundles (one sub-folder each)
    hub_bundles: tuple[str, ...] = ()  # extra bundles as hf://owner/repo references
    data_dir: str | None = None  # Flickr8k-layout folder: examples, and the reference index built from it
    reference_index: str | None = None  # the shipped index (PREFIX.json/.npz): used without data_dir, or when it describes data_dir
    cache_dir: str | None = None  # a reference index built from data_dir, and Hub example photos, are kept here
    preload: str = "default"  # which bundles load at start: default (the best on dev; others when first asked for), all, none
    quiet_s: float = 5.0  # preload=all: the others load once a first caption was served, or after this many seconds
    head_start_idle_s: float = 3.0  # with a head start (app.py): this process loads the default bundle once the head
    # start has answered nothing for this many seconds (until then, it answers)
    reference_wait_s: float = 3.0  # a caption waits at most this long for the reference index (a first build)
    max_pixels: int = 40_000_000  # larger photos are refused with a message
    n_examples: int = 12  # example photos offered
    hub_examples: str = "jxie/flickr8k"  # without a dataset folder: example photos from this Hub dataset's test split ('' = none)
    occlusion_grid: int = 7  # the occlusion map masks grid x grid patches
    encoder_options: dict = dataclasses.field(default_factory=dict)  # encoder config for every bundle: {"precision": "float32"}

    def __post_init__(self):
        if self.preload not in PRELOAD:
            raise ValueError(f"unknown preload policy {self.preload!r}; valid: {list(PRELOAD)}")


def without_paths(message: str, source: Any) -> str:
    """``message`` with any server-side path of ``source`` (a decoder's own message may quote it) reduced to
    the file's base name: what the user chose, not where the server stored it."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        for p in (path, os.path.abspath(path)):
            message = message.replace(p, os.path.basename(p))
        message = message.replace(os.path.dirname(os.path.abspath(path)) + os.sep, "")
    return message


def rss_mib() -> float | None:
    """This process's resident memory (Linux), else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


# -- bundles --------------------------------------------------------------------------------------
class BundlePool:
    """The bundles found, each loaded once (lazily, thread-safe) and kept.

    ``get(name)`` loads a bundle the first time it is asked for; each bundle has its own lock, so a request
    for a loaded bundle never waits behind another one's load, and loads run one at a time (two on 2 cores
    are no faster, and each bundle's memory figure is then its own)."""

    HEAD_START_WAIT_S = 120.0  # preload waits at most this long for the head start to be ready (or fail)

    def __init__(self, weights_dir: str, hub_bundles: tuple[str, ...] = (), encoder_options: dict | None = None):
        self.encoder_options_all = dict(encoder_options or {})
        self.paths: dict[str, str] = {}
        self.manifests: dict[str, dict] = {}
        self.errors: dict[str, str] = {}  # bundles that cannot even be listed: name -> why
        for b in list_bundles(weights_dir):
            if "manifest" in b:
                self.paths[b["name"]], self.manifests[b["name"]] = b["path"], b["manifest"]
            else:
                self.errors[b["name"]] = b["error"]
        for ref in hub_bundles:
            try:
                path = resolve_bundle(ref)
                m = read_manifest(path)
                self.paths[m.get("name", ref)], self.manifests[m.get("name", ref)] = path, m
            except Exception as exc:  # a Hub bundle that cannot be had is listed, not fatal
                self.errors[ref] = str(exc)
        self.names: list[str] = best_first(self.manifests)  # the default (first): chosen on both dev sets
        self._loaded: dict[str, Captioner] = {}
        self._locks = {name: threading.Lock() for name in self.paths}
        self._load_lock = threading.Lock()
        self._state = {name: "not loaded" for name in self.paths}
        self.load_seconds: dict[str, float] = {}
        self.memory_mib: dict[str, float] = {}  # resident memory that loading (and warming) the bundle added
        self._encoders: dict = {}  # encoders by name and config, shared by the bundles that use the same network
        self.head_start = None  # a second process serving the default bundle while this one loads it (attach)

    @property
    def default(self) -> str | None:
        return self.names[0] if self.names else None

    def state(self, name: str) -> str:
        return self._state[name]

    def is_ready(self, name: str) -> bool:
        return self._state.get(name) == "ready"

    def encoder_options(self, name: str) -> dict | None:
        """The pool's encoder options that this bundle's encoder has (precision: not every encoder)."""
        return supported_options(self.manifests[name]["encoder"]["name"], self.encoder_options_all)

    def attach(self, head_start) -> None:
        """``head_start`` (``caption_core.head_start.HeadStart``) answers captions with the default bundle until
        this pool has loaded it; then it is closed."""
        self.head_start = head_start

    def stand_in(self, name: str):
        """The head start, when it serves (or is about to serve) ``name`` and this pool has not loaded it."""
        h = self.head_start
        if h is None or self._state.get(name) == "ready" or not h.may_serve(name, self.default):
            return None
        return h

    def get(self, name: str) -> Captioner:
        """The bundle's captioner, loaded (and warmed up) on first use; ServingError if it cannot be."""
        if name not in self.paths:
            raise ServingError(f"No bundle named '{name}'. Available: {', '.join(self.names) or 'none'}.")
        captioner = self._loaded.get(name)
        if captioner is not None:
            return captioner
        with self._locks[name]:
            if name not in self._loaded:
                self._load(name)
            return self._loaded[name]

    def _load(self, name: str) -> None:
        with self._load_lock:
            self._state[name] = "loading"
            before, t0 = rss_mib(), time.perf_counter()
            try:
                captioner = Captioner.from_bundle(self.paths[name], self.encoder_options(name), self._encoders)
                # the first forward pass of an encoder builds its kernels: pay it here, not in a request
                captioner.caption(np.full((32, 32, 3), 128, np.uint8), strategy="greedy", max_length=2)
            except (BundleError, ImportError, OSError, ValueError, RuntimeError) as exc:
                self._state[name] = "failed"
                folder = self.paths[name]  # the user reads the bundle's name, never the server's folders
                text = str(exc).replace(os.path.abspath(folder), name).replace(folder, name)
                raise ServingError(f"Bundle '{name}' cannot be loaded: {text}") from None
            self.load_seconds[name] = round(time.perf_counter() - t0, 2)
            after = rss_mib()
            if before is not None and after is not None:
                self.memory_mib[name] = round(after - before, 1)
            self._loaded[name] = captioner
            self._state[name] = "ready"
            log.info("bundle %s loaded in %.1f s (+%s MiB)", name, self.load_seconds[name], self.memory_mib.get(name))
        if self.head_start is not None and name == self.default:  # this process serves it now
            self.head_start.close()

    def preload(self, policy: str, first_served: threading.Event, quiet_s: float, head_start_idle_s: float) -> None:
        """Load what ``policy`` says (blocking: run it in a thread). A broken bundle is logged here and
        reported to whoever picks it. With a head start attached, the default bundle loads once the head start
        has answered nothing for ``head_start_idle_s``."""
        names = {"default": self.names[:1], "all": self.names, "none": []}[policy]
        if names and self.head_start is not None:
            # the head start loads the same bundle: two loads at once on two cores would slow its first caption;
            # and while it answers a visitor, this process's load would slow each of those captions
            self.head_start.wait(self.HEAD_START_WAIT_S)
            self.head_start.wait_idle(head_start_idle_s)
            if not threading.main_thread().is_alive():  # the interpreter is exiting: no load to wait for
                return
        for i, name in enumerate(names):
            if i == 1:
                first_served.wait(quiet_s)
            try:
                self.get(name)
            except ServingError as exc:
                log.warning("%s", exc)

    def status_line(self) -> str:
        """One line while bundles are loading; empty when none is."""
        loading = [n for n in self.names if self._state[n] == "loading" and self.stand_in(n) is None]
        if not loading:
            return ""
        return "Loading " + ", ".join(f"`{n}`" for n in loading) + ": a caption with it starts once it is loaded."

    def status(self) -> list[dict]:
        """Per bundle: its encoder, state, load time (s), the memory its load added (MiB), and whether the head
        start's process answers its captions meanwhile."""
        return [{"bundle": n, "encoder": encoder_label(self.manifests[n]["encoder"]), "state": self._state[n],
                 "load_s": self.load_seconds.get(n), "memory_mib": self.memory_mib.get(n),
                 "head_start": bool(self.stand_in(n) and self.head_start.serving)}
                for n in self.names]

    def missing_encoders(self) -> list[tuple[str, str]]:
        """(encoder, the command that builds a bundle with it) for each registered encoder with no bundle."""
        have = {m["encoder"]["name"] for m in self.manifests.values()}
        have |= {member["name"] for m in self.manifests.values() if m["encoder"]["name"] == "concat"
                 for member in m["encoder"]["config"].get("members", [])}
        return [(name, cls.build_hint()) for name, cls in sorted(ENCODERS.items())
                if name not in have and name != "concat"]  # concat: built from other bundles (training ensemble)


def encoder_label(described: dict) -> str:
    """A manifest's encoder in words: its name, or a concat encoder's members joined by ' + '."""
    if described.get("name") == "concat":
        return " + ".join(m["name"] for m in described.get("config", {}).get("members", []))
    return described.get("name", "?")


# -- example photos --------------------------------------------------------------------------------
class Examples:
    """The example photos a page shows, and where they come from; ``fetch`` swaps in photos of the Hub
    dataset once they are downloaded (the page never waits for the network)."""

    FLICKR = "Flickr8k test photos"

    def __init__(self, paths: list[str], kind: str):
        self.paths, self.kind = list(paths), kind

    def fetch(self, repo_id: str, folder: str, n: int) -> None:
        try:
            paths = dataset_examples(repo_id, folder, n)
        except Exception as exc:  # offline, or the dataset changed: the photos we have stay
            log.info("no example photos from %s: %s", repo_id, exc)
            return
        if paths:
            self.paths, self.kind = paths, self.FLICKR


def fallback_examples() -> list[str]:
    """A few freely licensed photos that scikit-image ships (public domain / CC0), used from its package
    folder as they are (importing skimage.io to re-save them cost about a second of every start)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = os.path.join(list(spec.submodule_search_locations)[0], "data")
    names = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg")
    return [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]


# -- the service -----------------------------------------------------------------------------------
def describe_decoding(strategy: str, options: dict) -> str:
    """A decoding in a few words, for people: 'guided (detector 0.5 first, classifier 0.3, veto alone), beam 5, alpha
    1.0'; a classifier at threshold 1 requires nothing (it only vetoes)."""
    parts = []
    if strategy == "guided":
        extra = []
        if options.get("guide_detector", 1.0) < 1.0:
            extra.append(f"detector {options['guide_detector']}" + (" first" if options.get("guide_detector_first", True)
                                                                    else "") + (", counted" if options.get("guide_count")
                                                                                else ""))
        threshold = options.get("guide_threshold")
        extra.append(f"classifier {threshold}" if threshold is None or threshold < 1.0 else "the classifier only vetoes")
        if not options.get("guide_veto", True):
            extra.append("no veto")
        elif options.get("guide_veto_alone"):
            extra.append("veto alone")
        if options.get("guide_within"):
            extra.append(f"within {options['guide_within']} words")
        if options.get("guide_unseen"):
            extra.append("no unseen people")
        parts.append(f"guided ({', '.join(extra)})")
    else:
        parts.append(strategy)
    if "beam_width" in options and strategy in ("beam", "guided"):
        parts.append(f"beam {options['beam_width']}")
        if options.get("length_penalty"):
            parts.append(f"alpha {options['length_penalty']}")
    if options.get("consensus"):
        parts.append("consensus")
    if options.get("no_repeat_within"):
        parts.append(f"no word again within {options['no_repeat_within']}")
    if options.get("lookahead", LOOKAHEAD.default) < LOOKAHEAD.default:
        parts.append(f"lookahead {options['lookahead']}")
    return ", ".join(parts)


def test_scores(manifest: dict, field: str = "metrics") -> dict:
    """The test-split scores of a bundle's (or baseline's) default decoding, float32 features first."""
    by_strategy = test_metrics(manifest, field)
    strategy = (manifest.get("default_decoding") or {}).get("strategy", "beam")
    return by_strategy.get(strategy) or next(iter(by_strategy.values()), {})


def heat_overlay(photo: Image.Image, heat: np.ndarray) -> Image.Image:
    """Blend a [0, 1] heat map (g, g) over the photo: red where the word depends on the patch."""
    h = Image.fromarray((heat * 255).astype(np.uint8)).resize(photo.size, Image.Resampling.BICUBIC)
    a = np.asarray(h, np.float32)[..., None] / 255.0  # (H, W, 1)
    base = np.asarray(photo.convert("RGB"), np.float32)  # (H, W, 3)
    red = np.array([255.0, 40.0, 0.0])
    return Image.fromarray(np.clip(base * (1 - 0.6 * a) + red * 0.6 * a, 0, 255).astype(np.uint8))


class CaptionService:
    """Bundles, reference captions and example photos: everything a captioning page asks, as plain data."""

    def __init__(self, cfg: ServiceConfig):
        self.cfg = cfg
        self.bundles = BundlePool(cfg.weights_dir, cfg.hub_bundles, cfg.encoder_options)
        self.refs = References(cfg.data_dir, cfg.n_examples, cfg.cache_dir, start=False,
                               index_prefix=cfg.reference_index)
        self.limits = ImageLimits(max_pixels=cfg.max_pixels)
        self.first_served = threading.Event()  # a first caption was answered
        self.hub_folder = (os.path.join(cfg.cache_dir, "hub-examples", cfg.hub_examples.replace("/", "--"))
                           if cfg.cache_dir and cfg.hub_examples else None)
        # the dataset's test photos; without it, those fetched from the Hub by an earlier start; else scikit-image's
        flickr = self.refs.examples or (cached_examples(self.hub_folder) if self.hub_folder else [])
        self.examples = Examples(flickr or fallback_examples(), Examples.FLICKR if flickr else "free photos")
        self._started = False

    def start(self) -> None:
        """Start loading in the background: the reference index (with its CIDEr-D frequencies), the bundles
        the preload policy names, and Hub example photos where there are no dataset ones. Returns at once.
        The bundle thread is not a daemon: a daemon frozen inside TensorFlow or h5py at interpreter exit
        aborted the process or deadlocked it (seen in the tests); exit waits for a load, seconds at most."""
        if self._started:
            return
        self._started = True
        self.refs.start()
        if self.hub_folder and self.examples.kind != Examples.FLICKR:
            threading.Thread(target=self.examples.fetch, args=(self.cfg.hub_examples, self.hub_folder,
                                                                self.cfg.n_examples), daemon=True,
                             name="hub-examples").start()
        threading.Thread(target=self.bundles.preload, args=(self.cfg.preload, self.first_served, self.cfg.quiet_s,
                                                             self.cfg.head_start_idle_s),
                         daemon=False, name="preload").start()

    # -- inputs ----------------------------------------------------------------------------------
    def image(self, image: Any) -> Image.Image:
        if image is None:
            raise ServingError("Upload a photo (or pick an example) first.")
        name = os.path.basename(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else None
        try:
            return load_image(image, self.limits, name=name)
        except ImageError as exc:
            raise ServingError(f"That file can't be captioned: {without_paths(str(exc), image)}") from None

    @staticmethod
    def decoding(captioner: Captioner, strategy: str | None, options: dict | None) -> tuple[str, dict]:
        """-> (strategy, every option it reads): the bundle's defaults with ``options`` on top, checked."""
        try:
            s, opts = captioner.decoding(strategy, None, **(options or {}))
        except ValueError as exc:
            raise ServingError(str(exc)) from None
        return s.name, opts.to_dict()

    def lookup(self, img: Image.Image):
        """(dataset photo id, its reference captions) when ``img`` is a copy of one, else None."""
        return self.refs.lookup(img, wait=self.cfg.reference_wait_s)

    # -- what users ask ----------------------------------------------------------------------------
    def caption(self, image: Any, bundle: str, strategy: str | None = None, options: dict | None = None) -> dict:
        """One bundle's captions of a photo, best first, scored against its references when it is a
        dataset photo; the encoder's ImageNet classes where it has them; timings."""
        img = self.image(image)
        strategy, opts, result = self._caption(img, bundle, strategy, options)
        match = self.lookup(img)
        rows = []
        for c in result.captions:
            row = {"caption": c.text, "score": round(c.score, 3), "log_prob": round(c.log_prob, 3)}
            if c.agreement is not None:  # consensus decoding: what ordered them
                row["agreement"] = round(c.agreement, 4)
            if match:
                row.update(self.refs.scores(c.text, match[1]))
            rows.append(row)
        self.first_served.set()
        return {"bundle": bundle, "strategy": strategy, "options": opts, "captions": rows,
                "encode_ms": round(result.encode_ms, 1), "decode_ms": round(result.decode_ms, 1),
                "detect_ms": round(result.detect_ms, 1),
                # what the COCO detector saw: its detections (category, score, box as fractions), counts, main object
                "objects": result.objects,
                "imagenet_top5": [{"label": label, "probability": round(p, 4)} for label, p in result.labels or []],
                "guidance": result.guidance,  # guided strategy: the word required, its class, the words banned
                # a decoder that reads object words: the ones it read ('coco:<category>', 'imagenet:<word>'); else None
                "object_words": result.object_words,
                # an unfamiliar scene: an ensemble's object-word members read those words without the photo
                "words_alone": result.words_alone,
                # attention bundles: the weights over the grid for each word of the best caption (no extra pass)
                "attention": result.attention,
                "reference_image": match[0] if match else None, "references": list(match[1]) if match else []}

    def _caption(self, img: Image.Image, bundle: str, strategy: str | None, options: dict | None):
        """-> (strategy, options, CaptionResult): from the head start's process while it serves the bundle and
        this one loads it, else from this process (loading the bundle if it must)."""
        stand_in = self.bundles.stand_in(bundle)
        answered = stand_in.caption(img, strategy, options) if stand_in is not None else None
        return answered or self.caption_with(self.bundles.get(bundle), img, strategy, options)

    @classmethod
    def caption_with(cls, captioner: Captioner, img: Image.Image, strategy: str | None, options: dict | None):
        """-> (strategy, its checked options, CaptionResult) of one photo: what ``caption`` answers from, in this
        process or in the head start's (``caption_core.head_start``)."""
        strategy, opts = cls.decoding(captioner, strategy, options)
        return strategy, opts, captioner.caption(img, strategy=strategy, options=opts)[0]

    def compare(self, image: Any, strategy: str | None = None, options: dict | None = None) -> dict:
        """Every bundle's best caption of the same photo (each loaded if it was not), each with its own default
        decoding where ``strategy`` is None (``options`` then apply on top of each default), else with the one
        given. Each row says which decoding it used."""
        if not self.bundles.names:
            raise ServingError("No bundles found in weights/: build one with python -m training build.")
        img = self.image(image)
        match = self.lookup(img)
        rows, objects = [], None
        for name in self.bundles.names:
            captioner = self.bundles.get(name)
            used, opts = self.decoding(captioner, strategy, {**(options or {}), "num_return": 1})
            if objects is None:  # the detector looks once; every bundle reads what it found
                objects = captioner.detect([img])
            r = captioner.caption(img, strategy=used, options=opts, maps=False, objects=objects)[0]  # Compare shows no maps
            c = r.captions[0]
            rows.append({"bundle": name, "caption": c.text, "score": round(c.score, 3),
                         **(self.refs.scores(c.text, match[1]) if match else {}),
                         "encode_ms": round(r.encode_ms, 1), "decode_ms": round(r.decode_ms, 1),
                         "strategy": used, "decoding": describe_decoding(used, opts),
                         "guided_by": (r.guidance or {}).get("word") or None,
                         "guided_from": (r.guidance or {}).get("source") if (r.guidance or {}).get("word") else None,
                         "ruled_out": list((r.guidance or {}).get("banned_words", []))})
        self.first_served.set()
        return {"rows": rows, "objects": objects[0].to_dict() if objects and objects[0] is not None else None,
                "reference_image": match[0] if match else None, "references": list(match[1]) if match else []}

    def explain(self, image: Any, bundle: str, caption: str | None = None, size: int = 320) -> dict:
        """Per-word maps: {caption, method, words: [{word, probability, overlay (a PIL image)}]}; method
        'attention' (the decoder's own weights, one encoder pass) for attention bundles, else 'occlusion'."""
        img = self.image(image)
        captioner = self.bundles.get(bundle)
        try:
            ex = captioner.explain(img, caption or None, grid=self.cfg.occlusion_grid)
        except ValueError as exc:
            raise ServingError(f"Nothing to explain: {exc}") from None
        display = img.copy()
        display.thumbnail((size, size))
        words = []
        for word, p, heat in zip(ex.words, ex.probabilities, ex.heat):
            peak = heat.max()
            words.append({"word": word, "probability": float(p),
                          "overlay": heat_overlay(display, heat / peak if peak > 0 else heat)})
        return {"caption": ex.caption, "method": ex.method, "words": words}

    def attention_overlays(self, image: Any, attention: dict, size: int = 320) -> list[dict]:
        """A caption's ``attention`` (from ``caption``) drawn over the photo: [{word, overlay}], each map scaled
        to its own peak. Nothing is computed again."""
        display = self.image(image).copy()
        display.thumbnail((size, size))
        out = []
        for word, heat in zip(attention["words"], attention["maps"]):
            heat = np.asarray(heat, np.float32)  # (rows, cols)
            peak = heat.max()
            out.append({"word": word, "overlay": heat_overlay(display, heat / peak if peak > 0 else heat)})
        return out

    def object_boxes(self, image: Any, objects: dict, size: int = 480) -> tuple[Image.Image, list]:
        """What the detector saw, to draw: (the photo, at most ``size`` px on its long side, [((x0, y0, x1, y1) in its
        pixels, 'category score')]), from a caption's ``objects``. Nothing is computed again."""
        display = self.image(image).copy()
        display.thumbnail((size, size))
        w, h = display.size
        return display, [((int(d["box"][0] * w), int(d["box"][1] * h), int(d["box"][2] * w), int(d["box"][3] * h)),
                          f"{d['category']} {d['score']:.2f}") for d in objects.get("detections", [])]

    def card(self, bundle: str) -> str:
        """The bundle's model card (markdown) without the Hub's YAML header and the curve's image line."""
        if bundle not in self.bundles.paths:
            raise ServingError(f"No bundle named '{bundle}'.")
        path = os.path.join(self.bundles.paths[bundle], "README.md")
        m = self.bundles.manifests[bundle]
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                text = f.read()
            if text.startswith("---\n"):  # the Hub's metadata: for the Hub, not for people
                text = text.split("\n---\n", 1)[-1]
            text = "\n".join(line for line in text.splitlines() if not line.startswith("![Training curve]"))
        else:
            text = f"# {bundle}\n\nNo model card in the bundle."
        t = m.get("training", {})
        return text + (f"\n\n*Vocabulary {m['vocabulary'].get('size')} words; default decoding "
                       f"{m.get('default_decoding', {}).get('strategy')}; trained on {t.get('dataset_name', '?')}.*")

    def curve(self, bundle: str | None) -> str | None:
        """The bundle's training-curve PNG, if it has one."""
        if bundle not in self.bundles.paths:
            return None
        path = os.path.join(self.bundles.paths[bundle], "training_curve.png")
        return path if os.path.isfile(path) else None

    def default_decoding(self) -> tuple[str, dict]:
        """The default bundle's tuned decoding: (strategy, options)."""
        dd = self.bundles.manifests[self.bundles.default].get("default_decoding", {}) if self.bundles.default else {}
        return dd.get("strategy", "beam"), dd.get("options", {})

    def served_files(self) -> list[str]:
        """The only files of this server's disk that a page shows: example photos and training curves."""
        curves = [self.curve(n) for n in self.bundles.names]
        return sorted({os.path.abspath(p) for p in [*self.examples.paths, *curves] if p})

    def score_rows(self) -> list[dict]:
        """Test scores (default decoding) per bundle, per bundle before SCST where it was fine-tuned, and
        per language-only baseline: {model, kind, BLEU-4, CIDEr}."""
        rows = []
        for name in self.bundles.names:
            m = self.bundles.manifests[name]
            for label, field, kind in ((name, "metrics", "bundle"),
                                       (f"{name} before SCST", "cross_entropy_metrics", "cross-entropy only")):
                s = test_scores(m, field)
                if "BLEU-4" in s and "CIDEr" in s:
                    rows.append({"model": label, "kind": kind, "BLEU-4": round(s["BLEU-4"], 4),
                                 "CIDEr": round(s["CIDEr"], 4)})
        for b in list_baselines(self.cfg.weights_dir):
            s = test_scores(b)
            if "BLEU-4" in s and "CIDEr" in s:
                rows.append({"model": "language-only baseline", "kind": "baseline", "BLEU-4": round(s["BLEU-4"], 4),
                             "CIDEr": round(s["CIDEr"], 4)})
        return rows
