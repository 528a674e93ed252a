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
import tempfile
import threading
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
import numpy as np
from PIL import Image

from caption_core.bundle import BundleError, list_bundles, read_manifest, resolve_bundle
from caption_core.captioner import Captioner
from caption_core.decoding import STRATEGIES
from caption_core.encoders import ENCODERS
from caption_core.images import ImageError, ImageLimits, content_hash, load_image
from caption_core.metrics import CiderD, sentence_bleu

log = logging.getLogger("app")
HERE = os.path.dirname(os.path.abspath(__file__))
PREFERRED_DEFAULT = "efficientnet_lite0-flickr8k"


@dataclasses.dataclass(frozen=True)
class AppConfig:
    weights_dir: str = os.path.join(HERE, "weights")  # folder of bundles (one sub-folder each)
    hub_bundles: tuple[str, ...] = ()  # extra bundles as hf://owner/repo references
    data_dir: str | None = None  # Flickr8k-layout folder: examples and reference captions
    max_pixels: int = 40_000_000  # larger photos are refused with a message
    max_upload_mb: int = 20  # the server refuses larger uploads
    concurrency: int = 2  # requests processed at once (2 cores)
    queue_size: int = 16  # requests waiting beyond that get a "busy" error
    n_examples: int = 12  # example photos shown
    occlusion_grid: int = 7  # the occlusion map masks grid x grid patches
    cache_dir: str = os.path.join(HERE, "cache")  # the reference photos' content hashes are kept here


def default_data_dir() -> str | None:
    env = os.environ.get("CAPTION_DATA_DIR")
    if env:
        return env
    sibling = os.path.join(os.path.dirname(HERE), "shared", "data", "flickr8k")
    return sibling if os.path.isdir(sibling) else None


# -- models -----------------------------------------------------------------------------------
class Models:
    """The bundles found, loaded once each (lazily, thread-safe) and cached."""

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
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return sorted(self.refs, key=lambda n: (n != PREFERRED_DEFAULT, n))

    @property
    def default(self) -> str | None:
        return self.names[0] if self.names else None

    def get(self, name: str) -> Captioner:
        if name not in self.refs:
            raise gr.Error(f"No bundle named '{name}'. Available: {', '.join(self.names) or 'none'}.")
        with self._lock:
            if name not in self._loaded:
                try:
                    self._loaded[name] = Captioner.from_bundle(self.refs[name])
                except (BundleError, FileNotFoundError, OSError, ValueError) as exc:
                    raise gr.Error(f"Bundle '{name}' cannot be loaded: {exc}") from None
            return self._loaded[name]

    def warm_up(self) -> None:
        """Load every bundle (the default first) and caption a blank image once, so the first real
        request does not pay for loading and graph tracing."""
        blank = np.full((64, 64, 3), 128, np.uint8)
        for name in self.names:
            try:
                self.get(name).caption(blank)
            except Exception as exc:  # a broken bundle is reported when someone picks it
                log.warning("warm-up of %s failed: %s", name, exc)

    def missing_encoders(self) -> list[tuple[str, str]]:
        have = {m["encoder"]["name"] for m in self.manifests.values()}
        out = []
        for name in sorted(ENCODERS):
            if name not in have:
                extra = " --weights runs/vit_custom/backbone.keras  (after: python -m training train-vit)" \
                    if name == "vit_custom" else ""
                out.append((name, f"python -m training build --encoder {name}{extra}"))
        return out


# -- dataset references -------------------------------------------------------------------------
class References:
    """Reference captions of dataset photos, found by image content (a re-uploaded or re-encoded
    copy is recognised), and the CIDEr-D document frequencies of the dataset's references."""

    MAX_DISTANCE = 12  # of 256 hash bits

    def __init__(self, data_dir: str | None, n_examples: int, cache_dir: str | None = None):
        self.data_dir, self.cache_dir = data_dir, cache_dir
        self.examples: list[str] = []
        self.by_hash: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.bits: np.ndarray | None = None
        self.keys: list[str] = []
        self.cider: CiderD | None = None
        self.ready = threading.Event()
        if not data_dir:
            self.ready.set()
            return
        try:
            from training.datasets import load_flickr_local

            self.splits = {s: load_flickr_local(data_dir, s) for s in ("test", "dev", "train")}
        except Exception as exc:
            log.warning("no dataset references: %s", exc)
            self.data_dir = None
            self.ready.set()
            return
        self.examples = [e.image for e in self.splits["test"][:n_examples]]
        threading.Thread(target=self._index, daemon=True, name="reference-index").start()

    def _index(self) -> None:
        try:
            t0 = time.perf_counter()
            examples = [e for s in ("test", "dev", "train") for e in self.splits[s]]
            self.cider = CiderD(e.captions for e in examples)
            hashes = self._cached_hashes(examples)
            for e in examples:
                if e.image_id in hashes:
                    self.by_hash.setdefault(hashes[e.image_id], (e.image_id, e.captions))
            self.keys = list(self.by_hash)
            self.bits = np.unpackbits(np.frombuffer(bytes.fromhex("".join(self.keys)), np.uint8).reshape(len(self.keys), -1), axis=1)
            log.info("reference index: %d photos in %.1f s", len(self.keys), time.perf_counter() - t0)
        finally:
            self.ready.set()

    def _cached_hashes(self, examples) -> dict[str, str]:
        """Content hashes of the dataset photos, kept in cache/ so later starts skip the 8,000 decodes."""
        import hashlib
        import json

        key = hashlib.sha256(f"{os.path.abspath(self.data_dir)}|{len(examples)}".encode()).hexdigest()[:12]
        path = os.path.join(self.cache_dir, f"reference-hashes-{key}.json") if self.cache_dir else None
        try:
            with open(path or "", encoding="utf-8") as f:
                cached = json.load(f)
            if len(cached) == len(examples):
                return cached
        except (OSError, ValueError):
            pass
        hashes = {}
        for e in examples:
            try:
                with Image.open(e.image) as im:
                    hashes[e.image_id] = content_hash(im.convert("RGB"))
            except OSError:
                continue
        if path is None:
            return hashes
        try:
            from caption_core.bundle import write_json_atomic

            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_json_atomic(path, hashes)
        except OSError:
            pass  # a read-only checkout still works, just slower to start
        return hashes

    def lookup(self, img: Image.Image, wait: float = 3.0) -> tuple[str, tuple[str, ...]] | None:
        """(image id, reference captions) of the dataset photo that ``img`` is, else None. While the
        index is still being built (about 20 s on a first start, then cached) a caption waits at most
        ``wait`` seconds for it, and comes without references after that (measured: a first request
        during the build used to take 16 s)."""
        if not self.data_dir:
            return None
        self.ready.wait(wait)
        if self.bits is None:
            return None
        h = content_hash(img)
        if h in self.by_hash:
            return self.by_hash[h]
        q = np.unpackbits(np.frombuffer(bytes.fromhex(h), np.uint8))
        dist = (self.bits != q).sum(axis=1)
        best = int(dist.argmin())
        return self.by_hash[self.keys[best]] if dist[best] <= self.MAX_DISTANCE else None

    def scores(self, caption: str, refs: tuple[str, ...]) -> dict[str, float]:
        out = {"BLEU-4": round(sentence_bleu(caption, refs)[3], 3)}
        if self.cider is not None:
            out["CIDEr"] = round(self.cider.score(caption, refs), 3)
        return out


def fallback_examples() -> list[str]:
    """A few freely licensed photos that scikit-image ships (public domain / CC0)."""
    try:
        import skimage.data as data
    except ImportError:
        return []
    folder = tempfile.mkdtemp(prefix="caption-examples-")
    out = []
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        try:
            path = os.path.join(folder, f"{name}.png")
            Image.fromarray(getattr(data, name)()).save(path)
            out.append(path)
        except Exception:
            continue
    return out


# -- handlers (plain functions: the tests call them directly) ------------------------------------
class Handlers:
    def __init__(self, cfg: AppConfig, models: Models, refs: References):
        self.cfg, self.models, self.refs = cfg, models, refs
        self.limits = ImageLimits(max_pixels=cfg.max_pixels)

    def _image(self, image: Any) -> Image.Image:
        if image is None:
            raise gr.Error("Upload a photo (or pick an example) first.")
        try:
            return load_image(image, self.limits)
        except ImageError as exc:
            raise gr.Error(f"That file can't be captioned: {exc}") from None

    @staticmethod
    def options(strategy, beam_width, length_penalty, temperature, top_k, top_p, no_repeat, max_length, num_return,
                seed) -> tuple[str, dict]:
        if strategy not in STRATEGIES:
            raise gr.Error(f"Unknown strategy '{strategy}'; choose one of {', '.join(sorted(STRATEGIES))}.")
        opts = {"max_length": int(max_length), "no_repeat_ngram_size": int(no_repeat), "num_return": int(num_return)}
        if strategy == "beam":
            opts.update(beam_width=int(beam_width), length_penalty=float(length_penalty),
                        num_return=min(int(num_return), int(beam_width)))
        elif strategy == "sample":
            opts.update(temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
                        seed=None if seed is None or seed == "" or int(seed) < 0 else int(seed))
        else:
            opts["num_return"] = 1
        return strategy, opts

    def _references_md(self, match) -> str:
        if match is None:
            return ("*Not a dataset photo: no reference captions.*" if self.refs.data_dir
                    else "*No dataset configured (`--data-dir`): no reference captions.*")
        image_id, caps = match
        return f"**Reference captions** (dataset photo `{image_id}`):\n\n" + "\n".join(f"- {c}" for c in caps)

    def caption(self, image, bundle, strategy="beam", beam_width=3, length_penalty=0.0, temperature=1.0, top_k=0,
                top_p=1.0, no_repeat=0, max_length=30, num_return=1, seed=0):
        """-> (captions markdown, references markdown, details dict)."""
        img = self._image(image)
        strategy, opts = self.options(strategy, beam_width, length_penalty, temperature, top_k, top_p, no_repeat,
                                      max_length, num_return, seed)
        captioner = self.models.get(bundle)
        try:
            result = captioner.caption(img, strategy=strategy, **opts)[0]
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
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
        lines.append("")
        lines.append(f"*{bundle} · {strategy} · encode {result.encode_ms:.0f} ms · decode {result.decode_ms:.0f} ms*")
        details = {"bundle": bundle, "strategy": strategy, "options": opts, "captions": rows,
                   "encode_ms": round(result.encode_ms, 1), "decode_ms": round(result.decode_ms, 1),
                   "reference_image": match[0] if match else None,
                   "references": list(match[1]) if match else []}
        return "\n".join(lines), self._references_md(match), details

    def compare(self, image, strategy="beam", beam_width=3, length_penalty=0.0, temperature=1.0, top_k=0, top_p=1.0,
                no_repeat=0, max_length=30, num_return=1, seed=0):
        """Every bundle captions the same photo. -> (table rows, references markdown)."""
        img = self._image(image)
        strategy, opts = self.options(strategy, beam_width, length_penalty, temperature, top_k, top_p, no_repeat,
                                      max_length, 1, seed)
        opts["num_return"] = 1
        match = self.refs.lookup(img)
        rows = []
        for name in self.models.names:
            r = self.models.get(name).caption(img, strategy=strategy, **opts)[0]
            c = r.captions[0]
            s = self.refs.scores(c.text, match[1]) if match else {}
            rows.append([name, c.text, round(c.score, 3), s.get("BLEU-4"), s.get("CIDEr"),
                         round(r.encode_ms, 1), round(r.decode_ms, 1)])
        if not rows:
            raise gr.Error("No bundles found in weights/: build one with python -m training build.")
        return rows, self._references_md(match)

    def explain(self, image, bundle, caption: str | None = None):
        """Occlusion map per word: grey out each of grid x grid patches, measure how much each word's
        probability drops. -> (gallery of (overlay, word), caption explained)."""
        img = self._image(image)
        captioner = self.models.get(bundle)
        enc = captioner.encoder
        base = enc.preprocess([img])[0]  # (S, S, 3), exactly as caption() prepares it
        g = self.cfg.occlusion_grid
        edges = np.linspace(0, enc.input_size, g + 1).astype(int)
        batch = [base]
        for i in range(g):
            for j in range(g):
                occluded = base.copy()
                occluded[edges[i]:edges[i + 1], edges[j]:edges[j + 1]] = 127
                batch.append(occluded)
        feats = enc.encode_arrays(np.stack(batch))  # (1 + g*g, D); row 0 is the photo itself
        if not caption:  # the bundle's default decoding of the unoccluded photo, without encoding it again
            caption = captioner.decode(feats[:1])[0][0].text
        words, lp = captioner.word_log_probs(feats, caption)  # (1 + g*g, T)
        if not words or len(words) < 2:
            raise gr.Error("Nothing to explain: the caption has no words.")
        drop = np.maximum(lp[:1] - lp[1:], 0.0)  # (g*g, T): how much each patch mattered to each word
        display = img.copy()
        display.thumbnail((320, 320))
        out = []
        for t, word in enumerate(words[:-1]):  # the last entry is <end>
            heat = drop[:, t].reshape(g, g)
            heat = heat / heat.max() if heat.max() > 0 else heat
            out.append((overlay(display, heat), f"{word}  (p={np.exp(lp[0, t]):.2f})"))
        return out, caption

    def card(self, bundle) -> str:
        if bundle not in self.models.refs:
            raise gr.Error(f"No bundle named '{bundle}'.")
        path = os.path.join(self.models.refs[bundle], "README.md")
        m = self.models.manifests[bundle]
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                text = f.read()
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


def encoder_table(models: Models) -> str:
    lines = ["| encoder | bundle | test BLEU-4 | test CIDEr |", "|---|---|---|---|"]
    for name in models.names:
        m = models.manifests[name]
        scores = next(iter(m.get("metrics", {}).values()), {})
        s = scores.get(m.get("default_decoding", {}).get("strategy", "beam"), {})
        lines.append(f"| {m['encoder']['name']} | `{name}` | {s.get('BLEU-4', float('nan')):.3f} | {s.get('CIDEr', float('nan')):.3f} |")
    for enc, cmd in models.missing_encoders():
        lines.append(f"| {enc} | *not built*: `{cmd}` | | |")
    for name, err in models.errors.items():
        lines.append(f"| ? | `{name}`: {err} | | |")
    return "\n".join(lines)


def build_demo(cfg: AppConfig | None = None) -> gr.Blocks:
    cfg = cfg or AppConfig(data_dir=default_data_dir())
    models = Models(cfg)
    refs = References(cfg.data_dir, cfg.n_examples, cfg.cache_dir)
    handlers = Handlers(cfg, models, refs)
    examples = refs.examples or fallback_examples()
    dd = models.manifests[models.default].get("default_decoding", {}) if models.default else {}
    d_strategy, d_opts = dd.get("strategy", "beam"), dd.get("options", {})
    if models.default:
        # not a daemon: a daemon thread frozen inside TensorFlow or h5py at interpreter exit aborted the
        # process ("FATAL: exception not rethrown") or deadlocked it on h5py's lock (seen in the tests);
        # exit now waits for the warm-up, a few seconds at most
        threading.Thread(target=models.warm_up, daemon=False, name="warm-up").start()

    with gr.Blocks(title="Image captioning") as demo:
        demo.handlers = handlers  # for tests and embedding
        demo.example_paths = examples
        gr.Markdown("# Image captioning\nDrop in a photo, pick an encoder and a decoding strategy, read the caption. "
                    "Dataset photos show their reference captions and per-caption BLEU-4 / CIDEr.")
        with gr.Row():
            with gr.Column(scale=1):
                image = photo_input(type="filepath", label="Photo", sources=["upload", "webcam", "clipboard"], height=320)
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=[image],
                                label="Examples (Flickr8k test photos)" if refs.examples else "Examples")
            with gr.Column(scale=1):
                bundle = gr.Dropdown(choices=models.names, value=models.default, label="Encoder (bundle)",
                                     info="Bundles found in weights/. Encoders not built yet are listed under Encoders.")
                strategy = gr.Radio(choices=["greedy", "beam", "sample"], value=d_strategy, label="Decoding strategy",
                                    info="The default is the one chosen for this bundle on the dev split.")
                with gr.Accordion("Decoding options", open=False):
                    beam, sample = d_strategy == "beam", d_strategy == "sample"
                    beam_width = gr.Slider(1, 10, value=d_opts.get("beam_width", 3), step=1, label="Beam width",
                                           visible=beam)
                    length_penalty = gr.Slider(0.0, 2.0, value=d_opts.get("length_penalty", 0.0), step=0.1,
                                               label="Length penalty (alpha)", visible=beam)
                    temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature", visible=sample)
                    top_k = gr.Slider(0, 100, value=0, step=1, label="Top-k (0 = off)", visible=sample)
                    top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p", visible=sample)
                    seed = gr.Number(value=0, precision=0, label="Random seed (-1 = random)", visible=sample)
                    no_repeat = gr.Slider(0, 4, value=0, step=1, label="No-repeat n-gram size (0 = off)")
                    max_length = gr.Slider(5, 40, value=30, step=1, label="Maximum length (words)")
                    num_return = gr.Slider(1, 5, value=1, step=1, label="Captions returned (n-best)",
                                           visible=d_strategy != "greedy")
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
                gr.Markdown("Occlusion map: each of 7x7 patches is greyed out in turn; red marks the patches whose "
                            "removal lowers that word's probability the most.")
                explain_btn = gr.Button("Explain the caption")
                explained = gr.Textbox(label="Caption explained", interactive=False)
                gallery = gr.Gallery(label="Per-word occlusion maps", columns=4, height="auto")
            with gr.Tab("Model card"):
                card_md = gr.Markdown(handlers.card(models.default) if models.default else "No bundle.")
            with gr.Tab("Encoders"):
                gr.Markdown(encoder_table(models))
            with gr.Tab("Details (JSON)"):
                details = gr.JSON()

        opts = [strategy, beam_width, length_penalty, temperature, top_k, top_p, no_repeat, max_length, num_return, seed]

        def on_strategy(s):
            beam, sample = s == "beam", s == "sample"
            return (gr.update(visible=beam), gr.update(visible=beam), gr.update(visible=sample),
                    gr.update(visible=sample), gr.update(visible=sample), gr.update(visible=sample),
                    gr.update(visible=s != "greedy"))

        strategy.change(on_strategy, strategy, [beam_width, length_penalty, temperature, top_k, top_p, seed, num_return],
                        api_name=False, queue=False)
        caption_btn.click(handlers.caption, [image, bundle, *opts], [captions_md, references_md, details],
                          api_name="caption")
        compare_btn.click(handlers.compare, [image, *opts], [table, references_md], api_name="compare")
        explain_btn.click(handlers.explain, [image, bundle], [gallery, explained], api_name="explain")
        bundle.change(handlers.card, bundle, card_md, api_name="card")
    demo.queue(default_concurrency_limit=cfg.concurrency, max_size=cfg.queue_size)
    demo.app_config = cfg
    return demo


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Image captioning demo (Gradio).")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--data-dir", default=default_data_dir(), help="Flickr8k-layout folder for examples and references "
                   "(default: $CAPTION_DATA_DIR, else ../shared/data/flickr8k when present)")
    p.add_argument("--weights", default=os.path.join(HERE, "weights"), help="folder of bundles")
    p.add_argument("--hub", nargs="*", default=[b for b in os.environ.get("CAPTION_HUB_BUNDLES", "").split(",") if b],
                   help="extra bundles as hf://owner/repo")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--queue-size", type=int, default=16)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = AppConfig(weights_dir=args.weights, hub_bundles=tuple(args.hub), data_dir=args.data_dir,
                    concurrency=args.concurrency, queue_size=args.queue_size)
    demo = build_demo(cfg)
    allowed = [os.path.dirname(p) for p in demo.example_paths] + ([cfg.data_dir] if cfg.data_dir else [])
    demo.launch(server_name=args.host, server_port=args.port, show_error=True, allowed_paths=allowed,
                max_file_size=f"{cfg.max_upload_mb}mb")


if __name__ == "__main__":
    main()
elif os.environ.get("CAPTION_APP_NO_DEMO") != "1":
    demo = build_demo()  # `gradio app.py` and Spaces' reloader import this; nothing is launched
