"""Image captioning demo: drop in a photo, pick an encoder and a decoding strategy, read the caption.

    python app.py [--host 127.0.0.1] [--port 7860] [--data-dir ../shared/data/flickr8k] [--weights weights]

Importing this module builds the page (``demo``) but launches nothing. Every event has an
``api_name`` (``caption``, ``compare``, ``explain``, ``card``), so the same functions serve the
page and ``gradio_client``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import threading
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
import numpy as np
from PIL import Image

from caption_core.bundle import (BundleError, best_first, list_baselines, list_bundles, read_manifest, resolve_bundle,
                                 test_metrics)
from caption_core.captioner import Captioner
from caption_core.config import Config, parse_option
from caption_core.decoding import ALL_OPTIONS, STRATEGIES, Option, get_strategy
from caption_core.encoders import ENCODERS
from caption_core.hub import cached_examples, dataset_examples
from caption_core.images import ImageError, ImageLimits, load_image
from caption_core.references import References

log = logging.getLogger("app")
HERE = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class AppConfig(Config):
    weights_dir: str = os.path.join(HERE, "weights")  # folder of bundles (one sub-folder each)
    hub_bundles: tuple[str, ...] = ()  # extra bundles as hf://owner/repo references
    data_dir: str | None = None  # Flickr8k-layout folder: examples, and the reference index built from it
    reference_index: str = os.path.join(HERE, "references", "flickr8k")  # the shipped index (PREFIX.json/.npz): used without data_dir, or when it describes data_dir
    max_pixels: int = 40_000_000  # larger photos are refused with a message
    max_upload_mb: int = 20  # the server refuses larger uploads
    concurrency: int = 2  # requests processed at once (2 cores)
    queue_size: int = 16  # requests waiting beyond that get a "busy" error
    n_examples: int = 12  # example photos shown
    hub_examples: str = "jxie/flickr8k"  # without a dataset folder: example photos from this Hub dataset's test split ('' = none)
    occlusion_grid: int = 7  # the occlusion map masks grid x grid patches
    cache_dir: str = os.path.join(HERE, "cache")  # a reference index built from data_dir is kept here
    encoder_options: dict = dataclasses.field(default_factory=dict)  # encoder config for every bundle: {"precision": "float32"}


def default_data_dir() -> str | None:
    env = os.environ.get("CAPTION_DATA_DIR")
    if env:
        return env
    sibling = os.path.join(os.path.dirname(HERE), "shared", "data", "flickr8k")
    return sibling if os.path.isdir(sibling) else None


# -- models -----------------------------------------------------------------------------------
class Models:
    """The bundles found, each loaded once (lazily, thread-safe) and cached.

    Each bundle has its own lock, so a request waits only for the bundle it asked for: the warm-up loads
    the default bundle first, and a request for it is served as soon as that one is ready, never behind
    the loading of the others."""

    def __init__(self, cfg: AppConfig):
        self.cfg = cfg
        self.refs: dict[str, str] = {}
        self.manifests: dict[str, dict] = {}
        self.errors: dict[str, str] = {}
        for b in list_bundles(cfg.weights_dir):
            if "manifest" in b:
                self.refs[b["name"]], self.manifests[b["name"]] = b["path"], b["manifest"]
            else:
                self.errors[b["name"]] = b["error"]
        for ref in cfg.hub_bundles:
            try:
                path = resolve_bundle(ref)
                m = read_manifest(path)
                self.refs[m.get("name", ref)], self.manifests[m.get("name", ref)] = path, m
            except Exception as exc:  # a hub bundle that cannot be had is listed, not fatal
                self.errors[ref] = str(exc)
        self._loaded: dict[str, Captioner] = {}
        self._locks = {name: threading.Lock() for name in self.refs}
        self.ready = {name: threading.Event() for name in self.refs}  # loaded and warmed up
        self.first_served = threading.Event()  # a first request was answered (or the start is long past)

    @property
    def names(self) -> list[str]:
        return best_first(self.manifests)  # the default (first) is the best on the dev split

    @property
    def default(self) -> str | None:
        return self.names[0] if self.names else None

    def get(self, name: str) -> Captioner:
        if name not in self.refs:
            raise gr.Error(f"No bundle named '{name}'. Available: {', '.join(self.names) or 'none'}.")
        if name in self._loaded:
            return self._loaded[name]
        with self._locks[name]:
            if name not in self._loaded:
                try:
                    self._loaded[name] = Captioner.from_bundle(self.refs[name], self.encoder_options(name))
                except (BundleError, FileNotFoundError, OSError, ValueError) as exc:
                    folder = self.refs[name]  # the page names the bundle, never the server's folders
                    text = str(exc).replace(os.path.abspath(folder), name).replace(folder, name)
                    raise gr.Error(f"Bundle '{name}' cannot be loaded: {text}") from None
            return self._loaded[name]

    def encoder_options(self, name: str) -> dict | None:
        """The app's --encoder-option fields that this bundle's encoder has (precision: not every encoder)."""
        try:
            fields = {f.name for f in dataclasses.fields(
                ENCODERS[self.manifests[name]["encoder"]["name"]].config_class)}
        except KeyError:
            return None  # an unknown encoder: loading it says so
        return {k: v for k, v in self.cfg.encoder_options.items() if k in fields} or None

    def warm_up(self, quiet: float = 5.0) -> None:
        """Load each bundle, the default first, and caption a small blank image once (the first forward
        pass of an encoder builds its kernels), so that first requests do not pay for it. The other bundles
        wait until a first request was answered or ``quiet`` seconds passed: their imports (TensorFlow for
        a Keras encoder) would slow a first visitor who came for the default."""
        blank = np.full((32, 32, 3), 128, np.uint8)
        for i, name in enumerate(self.names):
            if i == 1:
                self.first_served.wait(quiet)
                self.first_served.set()
            try:
                self.get(name).caption(blank, strategy="greedy", max_length=2)
            except Exception as exc:  # a broken bundle is reported when someone picks it
                log.warning("warm-up of %s failed: %s", name, exc)
            finally:
                self.ready[name].set()

    def status(self) -> str:
        """One line for the page while bundles are still loading; empty once all are."""
        waiting = [n for n in self.names if not self.ready[n].is_set()]
        if not waiting:
            return ""
        return ("Loading " + ", ".join(f"`{n}`" for n in waiting) + ": a caption with "
                + ("it" if len(waiting) == 1 else "them") + " starts once loaded (a few seconds).")

    def missing_encoders(self) -> list[tuple[str, str]]:
        have = {m["encoder"]["name"] for m in self.manifests.values()}
        return [(name, cls.build_hint()) for name, cls in sorted(ENCODERS.items()) if name not in have]


class Examples:
    """The example photos the page shows, and where they come from; ``fetch`` swaps in photos of the Hub
    dataset once they are downloaded (in a thread: the page never waits for the network)."""

    FLICKR = "Flickr8k test photos"

    def __init__(self, paths: list[str], kind: str):
        self.paths, self.kind = list(paths), kind

    def fetch(self, repo_id: str, folder: str, n: int) -> None:
        try:
            paths = dataset_examples(repo_id, folder, n)
        except Exception as exc:  # offline, or the dataset changed: the bundled photos stay
            log.info("no example photos from %s: %s", repo_id, exc)
            return
        if paths:
            self.paths, self.kind = paths, self.FLICKR


def fallback_examples() -> list[str]:
    """A few freely licensed photos that scikit-image ships (public domain / CC0), used from its package
    folder as they are: importing skimage.io to re-save them cost about a second of every start."""
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = os.path.join(list(spec.submodule_search_locations)[0], "data")
    names = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg")
    return [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]


def without_paths(message: str, source: Any) -> str:
    """``message`` with any server-side path of ``source`` (a decoder's own message may quote it) reduced to
    the file's base name: what the user chose, not where the server stored it."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        for p in (path, os.path.abspath(path)):
            message = message.replace(p, os.path.basename(p))
        folder = os.path.dirname(os.path.abspath(path))
        message = message.replace(folder + os.sep, "")
    return message


# -- handlers (plain functions: the tests call them directly) ------------------------------------
class Handlers:
    """What each event does. ``options`` is a dict of decoding options (any of ``caption_core.decoding``'s
    registered options; each strategy reads its own, so one dict serves every strategy)."""

    def __init__(self, cfg: AppConfig, models: Models, refs: References):
        self.cfg, self.models, self.refs = cfg, models, refs
        self.limits = ImageLimits(max_pixels=cfg.max_pixels)

    def _image(self, image: Any) -> Image.Image:
        if image is None:
            raise gr.Error("Upload a photo (or pick an example) first.")
        name = os.path.basename(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else None
        try:
            return load_image(image, self.limits, name=name)
        except ImageError as exc:
            raise gr.Error(f"That file can't be captioned: {without_paths(str(exc), image)}") from None

    @staticmethod
    def decoding(captioner: Captioner, strategy: str, options: dict | None) -> tuple[str, dict]:
        """-> (strategy, every option it reads): the bundle's defaults with ``options`` on top, checked;
        a gr.Error that says what is wrong otherwise."""
        try:
            s, opts = captioner.decoding(strategy, None, **(options or {}))
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        return s.name, opts.to_dict()

    def _references_md(self, match) -> str:
        if match is None:
            return ("*Not a Flickr8k photo (or too flat to identify): no reference captions.*" if self.refs.available
                    else "*No reference index (`references/`) and no dataset (`--data-dir`): no reference captions.*")
        image_id, caps = match
        return f"**Reference captions** (dataset photo `{image_id}`):\n\n" + "\n".join(f"- {c}" for c in caps)

    def _loading_note(self, bundle: str) -> None:
        """Say so (a toast on the page) when the picked bundle is still loading, instead of spinning silently."""
        event = self.models.ready.get(bundle)
        if event is not None and not event.is_set():
            gr.Info(f"{bundle} is still loading: this first caption takes a few seconds more.")

    def caption(self, image, bundle, strategy="beam", options=None):
        """-> (captions markdown, references markdown, details dict)."""
        img = self._image(image)
        self._loading_note(bundle)
        captioner = self.models.get(bundle)
        strategy, opts = self.decoding(captioner, strategy, options)
        result = captioner.caption(img, strategy=strategy, options=opts)[0]
        match = self.refs.lookup(img)
        rows = []
        for c in result.captions:
            row = {"caption": c.text, "score": round(c.score, 3), "log_prob": round(c.log_prob, 3)}
            if match:
                row.update(self.refs.scores(c.text, match[1]))
            rows.append(row)
        lines = [f"### {rows[0]['caption']}", ""]
        if len(rows) > 1:
            lines += [f"{i}. {r['caption']}  (score {r['score']})" for i, r in enumerate(rows, 1)] + [""]
        if match:
            lines.append("Against the references: " + ", ".join(
                f"{k} {rows[0][k]}" for k in ("BLEU-4", "CIDEr") if k in rows[0]))
        if result.labels:  # what the encoder itself recognised: the limit may be the captions' vocabulary
            lines += ["", "What the encoder itself sees (its ImageNet classes): "
                      + ", ".join(f"{label} {p:.2f}" for label, p in result.labels)]
        lines.append("")
        lines.append(f"*{bundle} · {strategy} · encode {result.encode_ms:.0f} ms · decode {result.decode_ms:.0f} ms*")
        self.models.first_served.set()
        details = {"bundle": bundle, "strategy": strategy, "options": opts, "captions": rows,
                   "encode_ms": round(result.encode_ms, 1), "decode_ms": round(result.decode_ms, 1),
                   "imagenet_top5": [{"label": label, "probability": round(p, 4)} for label, p in result.labels or []],
                   "reference_image": match[0] if match else None,
                   "references": list(match[1]) if match else []}
        return "\n".join(lines), self._references_md(match), details

    def compare(self, image, strategy="beam", options=None):
        """Every bundle captions the same photo (its best caption). -> (table rows, references markdown)."""
        img = self._image(image)
        match = self.refs.lookup(img)
        rows = []
        for name in self.models.names:
            self._loading_note(name)
            captioner = self.models.get(name)
            used, opts = self.decoding(captioner, strategy, {**(options or {}), "num_return": 1})
            r = captioner.caption(img, strategy=used, options=opts)[0]
            c = r.captions[0]
            scores = self.refs.scores(c.text, match[1]) if match else {}
            rows.append([name, c.text, round(c.score, 3), scores.get("BLEU-4"), scores.get("CIDEr"),
                         round(r.encode_ms, 1), round(r.decode_ms, 1)])
        if not rows:
            raise gr.Error("No bundles found in weights/: build one with python -m training build.")
        self.models.first_served.set()
        return rows, self._references_md(match)

    def explain(self, image, bundle, caption: str | None = None):
        """Per-word occlusion maps. -> (gallery of (overlay, word), caption explained)."""
        img = self._image(image)
        try:
            ex = self.models.get(bundle).explain(img, caption or None, grid=self.cfg.occlusion_grid)
        except ValueError as exc:
            raise gr.Error(f"Nothing to explain: {exc}") from None
        display = img.copy()
        display.thumbnail((320, 320))
        out = []
        for word, p, heat in zip(ex.words, ex.probabilities, ex.heat):
            peak = heat.max()
            out.append((overlay(display, heat / peak if peak > 0 else heat), f"{word}  (p={p:.2f})"))
        return out, ex.caption

    def curve(self, bundle) -> str | None:
        """The bundle's training-curve PNG (shown beside its card), if it has one."""
        if bundle not in self.models.refs:
            return None
        path = os.path.join(self.models.refs[bundle], "training_curve.png")
        return path if os.path.isfile(path) else None

    def card(self, bundle) -> str:
        if bundle not in self.models.refs:
            raise gr.Error(f"No bundle named '{bundle}'.")
        path = os.path.join(self.models.refs[bundle], "README.md")
        m = self.models.manifests[bundle]
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                text = f.read()
            if text.startswith("---\n"):  # the Hub's YAML metadata: for the Hub, not for people
                text = text.split("\n---\n", 1)[-1]
            text = "\n".join(line for line in text.splitlines() if not line.startswith("![Training curve]"))
        else:
            text = f"# {bundle}\n\nNo model card in the bundle."
        t = m.get("training", {})
        return text + (f"\n\n*Vocabulary {m['vocabulary'].get('size')} words; default decoding "
                       f"{m.get('default_decoding', {}).get('strategy')}; trained on {t.get('dataset_name', '?')}.*")


def overlay(photo: Image.Image, heat: np.ndarray) -> Image.Image:
    """Blend a [0, 1] heat map (g, g) over the photo: red where the word depends on the patch."""
    h = Image.fromarray((heat * 255).astype(np.uint8)).resize(photo.size, Image.Resampling.BICUBIC)
    a = np.asarray(h, np.float32)[..., None] / 255.0  # (H, W, 1)
    base = np.asarray(photo.convert("RGB"), np.float32)
    red = np.array([255.0, 40.0, 0.0])
    return Image.fromarray(np.clip(base * (1 - 0.6 * a) + red * 0.6 * a, 0, 255).astype(np.uint8))


# -- the page ------------------------------------------------------------------------------------
def photo_input(**kwargs) -> gr.Image:
    """``gr.Image`` (same front end: upload, webcam, clipboard) that hands the uploaded file to
    caption_core's loader untouched, so a corrupt, truncated or odd file gets our clear message
    instead of failing inside Gradio's own preprocessing. (Overridden on the instance: a subclass
    would make Gradio write a .pyi file beside this module.)"""
    component = gr.Image(**kwargs)
    gradio_preprocess = component.preprocess

    def preprocess(payload):
        if payload is not None and getattr(payload, "path", None) and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return gradio_preprocess(payload)

    component.preprocess = preprocess
    return component


def test_scores(manifest: dict, field: str = "metrics") -> dict:
    """The test-split scores of a bundle's (or baseline's) default decoding, float32 features first."""
    by_strategy = test_metrics(manifest, field)
    strategy = (manifest.get("default_decoding") or {}).get("strategy", "beam")
    return by_strategy.get(strategy) or next(iter(by_strategy.values()), {})


def score_rows(models: Models, baselines: list[dict]) -> list[dict]:
    """One row per bundle (and per bundle before SCST, where it was fine-tuned) and per baseline."""
    rows = []
    for name in models.names:
        m = models.manifests[name]
        for label, field, kind in ((name, "metrics", "bundle"),
                                   (f"{name} before SCST", "cross_entropy_metrics", "cross-entropy only")):
            s = test_scores(m, field)
            if "BLEU-4" in s and "CIDEr" in s:
                rows.append({"model": label, "kind": kind, "BLEU-4": round(s["BLEU-4"], 4), "CIDEr": round(s["CIDEr"], 4)})
    for b in baselines:
        s = test_scores(b)
        if "BLEU-4" in s and "CIDEr" in s:
            rows.append({"model": "language-only baseline", "kind": "baseline", "BLEU-4": round(s["BLEU-4"], 4),
                         "CIDEr": round(s["CIDEr"], 4)})
    return rows


def encoder_table(models: Models) -> str:
    lines = ["| encoder | bundle | test BLEU-4 | test CIDEr |", "|---|---|---|---|"]
    for name in models.names:
        m = models.manifests[name]
        s = test_scores(m)
        lines.append(f"| {m['encoder']['name']} | `{name}` | {s.get('BLEU-4', float('nan')):.3f} | {s.get('CIDEr', float('nan')):.3f} |")
    for enc, cmd in models.missing_encoders():
        lines.append(f"| {enc} | *not built*: `{cmd}` | | |")
    for name, err in models.errors.items():
        lines.append(f"| ? | `{name}`: {err} | | |")
    return "\n".join(lines)


def score_plots(rows: list[dict]) -> None:
    """Two bar charts (Gradio's own plot component): test BLEU-4 and CIDEr of each bundle and baseline."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["model", "kind", "BLEU-4", "CIDEr"])
    colours = {"bundle": "#2563eb", "cross-entropy only": "#93c5fd", "baseline": "#9ca3af"}
    with gr.Row():
        for metric in ("BLEU-4", "CIDEr"):
            gr.BarPlot(frame, x="model", y=metric, color="kind", color_map=colours, sort=None, x_label_angle=-20,
                       title=f"Test {metric} (Flickr8k, default decoding)", x_title="", y_title=metric, height=320)


def option_control(option: Option, value: Any, visible: bool):
    """The page's control for one registered decoding option."""
    if option.type is bool:
        return gr.Checkbox(value=bool(value), label=option.title, info=option.help, visible=visible)
    if option.nullable:  # e.g. the seed: empty or -1 means "none"
        return gr.Number(value=-1 if value is None else value, precision=0, label=option.title, info=option.help,
                         visible=visible)
    return gr.Slider(option.min, option.max, value=value, step=option.step or (1 if option.type is int else 0.05),
                     label=option.title, info=option.help, visible=visible)


def visible_options(strategy: str) -> set[str]:
    return {o.name for o in get_strategy(strategy).options} if strategy in STRATEGIES else set()


def build_demo(cfg: AppConfig | None = None, background: bool = True) -> gr.Blocks:
    """The page. Loading the bundles and indexing the references run in the background: started here,
    or with ``background=False`` by ``demo.start_background()`` once the server answers (``main`` does
    that, so that their imports do not slow the start of the page)."""
    cfg = cfg or AppConfig(data_dir=default_data_dir())
    models = Models(cfg)
    refs = References(cfg.data_dir, cfg.n_examples, cfg.cache_dir, start=False, index_prefix=cfg.reference_index)
    handlers = Handlers(cfg, models, refs)
    hub_folder = os.path.join(cfg.cache_dir, "hub-examples", cfg.hub_examples.replace("/", "--"))
    # the dataset's test photos; without the dataset, those fetched from the Hub by an earlier start; else
    # the bundled photos (and the Hub ones are fetched in the background, for the next page load)
    flickr = refs.examples or cached_examples(hub_folder)
    examples = Examples(flickr or fallback_examples(), Examples.FLICKR if flickr else "free photos")
    dd = models.manifests[models.default].get("default_decoding", {}) if models.default else {}
    d_strategy, d_opts = dd.get("strategy", "beam"), dd.get("options", {})

    def start_background() -> None:
        # the default bundle and the photo index (with its CIDEr-D frequencies) now; the other bundles once a
        # first visitor is served. Not a daemon: a daemon thread frozen inside TensorFlow or h5py at
        # interpreter exit aborted the process ("FATAL: exception not rethrown") or deadlocked it on h5py's
        # lock (seen in the tests); exit now waits for the warm-up, a few seconds at most
        refs.start()
        if cfg.hub_examples and examples.kind != Examples.FLICKR:
            threading.Thread(target=examples.fetch, args=(cfg.hub_examples, hub_folder, cfg.n_examples),
                             daemon=True, name="hub-examples").start()
        if models.default:
            threading.Thread(target=models.warm_up, daemon=False, name="warm-up").start()
        else:
            models.first_served.set()

    with gr.Blocks(title="Image captioning") as demo:
        demo.handlers = handlers  # for tests and embedding
        demo.example_paths = examples.paths
        demo.examples = examples
        demo.start_background = start_background
        gr.Markdown("# Image captioning\nDrop in a photo, pick an encoder and a decoding strategy, read the caption. "
                    "Dataset photos show their reference captions and per-caption BLEU-4 / CIDEr.")
        with gr.Row():
            with gr.Column(scale=1):
                image = photo_input(type="filepath", label="Photo", sources=["upload", "webcam", "clipboard"], height=320)
                gallery_examples = gr.Gallery(value=examples.paths, label=f"Examples ({examples.kind}): click one",
                                              columns=6, height=170, allow_preview=False, show_label=True,
                                              visible=bool(examples.paths))
            with gr.Column(scale=1):
                bundle = gr.Dropdown(choices=models.names, value=models.default, label="Encoder (bundle)",
                                     info="Bundles found in weights/. Encoders not built yet are listed under Encoders.")
                loading = gr.Markdown(models.status())
                loading_timer = gr.Timer(1.0, active=bool(models.status()))
                strategy = gr.Radio(choices=list(STRATEGIES), value=d_strategy, label="Decoding strategy",
                                    info="The default is the one chosen for this bundle on the dev split.")
                with gr.Accordion("Decoding options", open=False):
                    shown = visible_options(d_strategy)
                    controls = {name: option_control(o, d_opts.get(name, o.default), name in shown)
                                for name, o in ALL_OPTIONS.items()}
                with gr.Row():
                    caption_btn = gr.Button("Caption", variant="primary")
                    compare_btn = gr.Button("Compare all encoders")
                captions_md = gr.Markdown(label="Caption")
                references_md = gr.Markdown()
        with gr.Tabs():
            with gr.Tab("Compare"):
                table = gr.Dataframe(headers=["bundle", "caption", "score", "BLEU-4", "CIDEr", "encode ms", "decode ms"],
                                     interactive=False, wrap=True)
            with gr.Tab("Which part of the photo each word depends on"):
                gr.Markdown(f"Occlusion map: each of {cfg.occlusion_grid}x{cfg.occlusion_grid} patches is greyed out "
                            "in turn; red marks the patches whose removal lowers that word's probability the most.")
                explain_btn = gr.Button("Explain the caption")
                explained = gr.Textbox(label="Caption explained", interactive=False)
                gallery = gr.Gallery(label="Per-word occlusion maps", columns=4, height="auto")
            with gr.Tab("Model card"):
                first_curve = handlers.curve(models.default) if models.default else None
                curve_img = gr.Image(first_curve, label="Training curve", interactive=False, height=300,
                                     visible=first_curve is not None)
                card_md = gr.Markdown(handlers.card(models.default) if models.default else "No bundle.")
            with gr.Tab("Encoders"):
                rows = score_rows(models, list_baselines(cfg.weights_dir))
                if rows:
                    score_plots(rows)
                gr.Markdown(encoder_table(models))
            with gr.Tab("Details (JSON)"):
                details = gr.JSON()
        # the API takes the options as one JSON object; the page gathers its controls into it first
        options = gr.JSON(value={}, visible=False)

        def gather(s, *values):
            names = visible_options(s)
            return {name: v for name, v in zip(controls, values) if name in names}

        def on_strategy(s):
            names, own = visible_options(s), get_strategy(s).defaults if s in STRATEGIES else {}
            return [gr.update(visible=name in names, **({"value": own[name]} if name in own else {}))
                    for name in controls]

        def on_tick():
            text = models.status()
            return text, gr.Timer(active=bool(text))

        def pick_example(evt: gr.SelectData):
            return examples.paths[evt.index]

        shown_first = list(examples.paths)

        def current_examples():  # a page loaded after the Hub photos arrived shows them
            if examples.paths == shown_first:
                return gr.skip()
            return gr.Gallery(value=examples.paths, label=f"Examples ({examples.kind}): click one",
                              visible=bool(examples.paths))

        loading_timer.tick(on_tick, None, [loading, loading_timer], api_name=False, queue=False)
        demo.load(on_tick, None, [loading, loading_timer], api_name=False, queue=False)
        demo.load(current_examples, None, gallery_examples, api_name=False, queue=False)
        gallery_examples.select(pick_example, None, image, api_name=False, queue=False)
        strategy.change(on_strategy, strategy, list(controls.values()), api_name=False, queue=False)
        gathered = dict(fn=gather, inputs=[strategy, *controls.values()], outputs=options, api_name=False, queue=False)
        caption_btn.click(**gathered).then(handlers.caption, [image, bundle, strategy, options],
                                           [captions_md, references_md, details], api_name="caption")
        compare_btn.click(**gathered).then(handlers.compare, [image, strategy, options], [table, references_md],
                                           api_name="compare")
        explain_btn.click(handlers.explain, [image, bundle], [gallery, explained], api_name="explain")
        bundle.change(handlers.card, bundle, card_md, api_name="card")
        def on_bundle_curve(b):
            path = handlers.curve(b)
            return gr.Image(value=path, visible=path is not None)

        bundle.change(on_bundle_curve, bundle, curve_img, api_name=False, queue=False)
    demo.queue(default_concurrency_limit=cfg.concurrency, max_size=cfg.queue_size)
    demo.app_config = cfg
    if background:
        start_background()
    return demo


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Image captioning demo (Gradio).")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--data-dir", default=default_data_dir(), help="Flickr8k-layout folder for examples and references "
                   "(default: $CAPTION_DATA_DIR, else ../shared/data/flickr8k when present)")
    p.add_argument("--weights", default=os.path.join(HERE, "weights"), help="folder of bundles")
    p.add_argument("--hub", nargs="*", default=[b for b in os.environ.get("CAPTION_HUB_BUNDLES", "").split(",") if b],
                   help="extra bundles as hf://owner/repo")
    p.add_argument("--concurrency", type=int, default=2, help="requests processed at once (default: %(default)s)")
    p.add_argument("--queue-size", type=int, default=16, help="requests waiting beyond that (default: %(default)s)")
    p.add_argument("--encoder-option", dest="encoder_options", type=parse_option, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="encoder config field for every bundle, repeatable: precision=float32 forces float32 "
                        "on CPUs with native bfloat16")
    return p


def config_from_args(args) -> AppConfig:
    return AppConfig(weights_dir=args.weights, hub_bundles=tuple(args.hub), data_dir=args.data_dir,
                     concurrency=args.concurrency, queue_size=args.queue_size,
                     encoder_options=dict(args.encoder_options))


def launch(demo: gr.Blocks, args) -> None:
    """Serve the page, then start loading the bundles (if ``build_demo`` left that to us), then block."""
    cfg = demo.app_config
    allowed = ([os.path.dirname(p) for p in demo.example_paths] + ([cfg.data_dir] if cfg.data_dir else [])
               + [os.path.join(cfg.cache_dir, "hub-examples")])
    demo.launch(server_name=args.host, server_port=args.port, show_error=True, allowed_paths=allowed,
                max_file_size=f"{cfg.max_upload_mb}mb", prevent_thread_lock=True)
    demo.start_background()
    demo.block_thread()


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    launch(build_demo(config_from_args(args), background=False), args)


if __name__ == "__main__":
    main()
elif os.environ.get("CAPTION_APP_NO_DEMO") != "1":
    demo = build_demo()  # `gradio app.py` and Spaces' reloader import this; nothing is launched
