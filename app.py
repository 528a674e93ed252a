"""Image captioning demo: drop in a photo, pick an encoder and a decoding strategy, read the caption.

    python app.py [--host 127.0.0.1] [--port 7860] [--data-dir ../shared/data/flickr8k] [--weights weights]
                  [--preload default|all|none]

The page only: layout, events and formatting. Bundles, references and example photos are served by
``caption_core.serving.CaptionService``. Importing this module builds the page (``demo``) but launches
nothing. Every event has an ``api_name`` (``caption``, ``compare``, ``explain``, ``card``, ``status``), so the
same functions serve the page and ``gradio_client``. The server serves no file of its disk but the example
photos and the training curves the page shows.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from caption_core.config import parse_option
from caption_core.serving import PRELOAD

log = logging.getLogger("app")
HERE = os.path.dirname(os.path.abspath(__file__))


def default_data_dir() -> str | None:
    env = os.environ.get("CAPTION_DATA_DIR")
    if env:
        return env
    sibling = os.path.join(os.path.dirname(HERE), "shared", "data", "flickr8k")
    return sibling if os.path.isdir(sibling) else None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Image captioning demo (Gradio).")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--data-dir", default=default_data_dir(), help="Flickr8k-layout folder for examples and references "
                   "(default: $CAPTION_DATA_DIR, else ../shared/data/flickr8k when present)")
    p.add_argument("--weights", default=os.path.join(HERE, "weights"), help="folder of bundles")
    p.add_argument("--hub", nargs="*", default=[b for b in os.environ.get("CAPTION_HUB_BUNDLES", "").split(",") if b],
                   help="extra bundles as hf://owner/repo")
    p.add_argument("--preload", choices=PRELOAD, default="default",
                   help="bundles loaded at start: the default one (others when first picked; measured the quickest "
                        "first minute), all (the others once a first caption was served), none (default: %(default)s)")
    p.add_argument("--head-start", action=argparse.BooleanOptionalAction, default=True,
                   help="load the default bundle in a second process started before gradio's import, which answers "
                        "the first captions until this process has loaded it (caption_core/head_start.py; "
                        "default: %(default)s; off with --preload none)")
    p.add_argument("--concurrency", type=int, default=2, help="requests processed at once (default: %(default)s)")
    p.add_argument("--queue-size", type=int, default=16, help="requests waiting beyond that (default: %(default)s)")
    p.add_argument("--encoder-option", dest="encoder_options", type=parse_option, action="append", default=[],
                   metavar="KEY=VALUE", help="encoder config field for every bundle, repeatable: precision=float32 "
                                             "forces float32 on CPUs with native bfloat16")
    return p


def start_head_start(args):
    """``caption_core.head_start.HeadStart`` loading the default bundle in a second process, or None
    (``--no-head-start``, ``--preload none``)."""
    if not args.head_start or args.preload == "none":
        return None
    from caption_core.head_start import HeadStart

    try:
        return HeadStart.start(args.weights, tuple(args.hub), dict(args.encoder_options))
    except (OSError, ValueError) as exc:  # no second process here (pass_fds is POSIX): the page loads it itself
        log.warning("no head start (%s): the default bundle loads after the page", exc)
        return None


# `python app.py`: the default bundle starts loading in a second process now, before gradio's import, so the two
# overlap on two cores (seconds each, and neither overlaps a thread: caption_core/head_start.py). `import app`
# (tests, `gradio app.py`, embedding) starts nothing.
HEAD_START = None
if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    HEAD_START = start_head_start(parser().parse_args())

import gradio as gr  # noqa: E402  (after the head start, on purpose)

from caption_core.decoding import ALL_OPTIONS, STRATEGIES, Option, get_strategy  # noqa: E402
from caption_core.formatting import (COMPARE_CSS, caption_md, compare_html, describe_objects,  # noqa: E402
                                     detector_table, encoder_table, probe_table, references_md)
from caption_core.serving import CaptionService, Examples, ServiceConfig, ServingError  # noqa: E402


@dataclasses.dataclass(frozen=True)
class AppConfig(ServiceConfig):
    weights_dir: str = os.path.join(HERE, "weights")  # folder of bundles (one sub-folder each)
    reference_index: str = os.path.join(HERE, "references", "flickr8k")  # the shipped index (PREFIX.json/.npz)
    cache_dir: str = os.path.join(HERE, "cache")  # a reference index built from data_dir, Hub example photos
    max_upload_mb: int = 20  # the server refuses larger uploads
    concurrency: int = 2  # requests processed at once (2 cores)
    queue_size: int = 16  # requests waiting beyond that get a "busy" error


def shown(fn):
    """The service's errors as the page's error toasts (and the API's error messages)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ServingError as exc:
            raise gr.Error(str(exc)) from None
    return wrapper


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


def photo_input(**kwargs) -> gr.Image:
    """``gr.Image`` (upload, webcam, clipboard) that hands the uploaded file to caption_core's loader
    untouched, so a corrupt or odd file gets our clear message instead of failing inside Gradio's own
    preprocessing. (Overridden on the instance: a subclass would make Gradio write a .pyi file.)"""
    component = gr.Image(**kwargs)
    gradio_preprocess = component.preprocess

    def preprocess(payload):
        if payload is not None and getattr(payload, "path", None) and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return gradio_preprocess(payload)

    component.preprocess = preprocess
    return component


# -- the page ------------------------------------------------------------------------------------------
class Handlers:
    """What each event does: the service's answer, formatted for the page (the tests call these directly)."""

    def __init__(self, service: CaptionService):
        self.service = service

    def loading_note(self, bundle: str) -> None:
        """A toast when the picked bundle is not loaded yet, instead of spinning silently."""
        pool = self.service.bundles
        if bundle in pool.paths and not pool.is_ready(bundle) and pool.stand_in(bundle) is None:
            gr.Info(f"{bundle} is loading (first use): this caption takes a few seconds more.")

    @shown
    def caption(self, image, bundle, strategy=None, options=None):
        """-> (captions markdown, references markdown, details dict)."""
        self.loading_note(bundle)
        a = self.service.caption(image, bundle, strategy, options)
        return caption_md(a), references_md(self.service, a), a

    @shown
    def compare(self, image, strategy=None, options=None):
        """Every bundle's best caption of the photo: each with its own default decoding where ``strategy`` is
        empty, else with the one given. -> (table html, references markdown, details dict)."""
        for name in self.service.bundles.names:
            self.loading_note(name)
        a = self.service.compare(image, strategy or None, (options or None) if strategy else None)
        return compare_html(a["rows"]), references_md(self.service, a), a

    @shown
    def explain(self, image, bundle, caption: str | None = None):
        """-> (gallery of (overlay, word), caption explained)."""
        a = self.service.explain(image, bundle, caption)
        return [(w["overlay"], f"{w['word']}  (p={w['probability']:.2f}, {a['method']})") for w in a["words"]], \
            a["caption"]

    def maps(self, image, details):
        """After a caption: an attention bundle's maps (in ``details``) drawn in the explanation tab, one per
        word; other bundles leave the tab as it was. -> (gallery, caption explained)."""
        attention = (details or {}).get("attention")
        if not attention or image is None:
            return gr.skip(), gr.skip()
        drawn = self.service.attention_overlays(image, attention)
        whose = f"  ({attention['member']})" if attention.get("member") else ""
        return [(d["overlay"], d["word"] + whose) for d in drawn], (details["captions"] or [{}])[0].get("caption", "")

    def boxes(self, image, details):
        """After a caption or a comparison: what the detector saw, as labelled boxes over the photo."""
        objects = (details or {}).get("objects")
        if objects is None or image is None:
            return gr.skip()
        return gr.AnnotatedImage(self.service.object_boxes(image, objects), visible=True,
                                 label=f"What the detector sees: {describe_objects(objects)}")

    @shown
    def card(self, bundle):
        return self.service.card(bundle)

    def status(self):
        """-> (loading line, its timer, bundle status table): the page's refresh while bundles load."""
        line = self.service.bundles.status_line()
        return line, gr.Timer(active=bool(line)), encoder_table(self.service)

    def status_api(self) -> dict:
        """The bundles' states, load times and memory (the ``status`` endpoint)."""
        return {"bundles": self.service.bundles.status(), "references_ready": self.service.refs.ready.is_set()}


def build_demo(cfg: AppConfig | None = None, background: bool = True, head_start=None) -> gr.Blocks:
    """The page. Loading runs in the background: started here, or with ``background=False`` by
    ``demo.start_background()`` once the server answers (``main`` does that: the page comes first).
    ``head_start``: a ``caption_core.head_start.HeadStart`` serving the default bundle meanwhile."""
    cfg = cfg or AppConfig(data_dir=default_data_dir())
    service = CaptionService(cfg)
    if head_start is not None:
        service.bundles.attach(head_start)
    handlers = Handlers(service)
    pool, examples = service.bundles, service.examples
    d_strategy, d_opts = service.default_decoding()

    with gr.Blocks(title="Image captioning") as demo:
        demo.handlers, demo.service, demo.app_config = handlers, service, cfg  # for tests and embedding
        demo.example_paths, demo.start_background = examples.paths, service.start
        gr.Markdown("# Image captioning\nDrop in a photo, pick an encoder and a decoding strategy, read the caption. "
                    "Dataset photos show their reference captions and per-caption BLEU-4 / CIDEr.")
        with gr.Row():
            with gr.Column(scale=1):
                image = photo_input(type="filepath", label="Photo", sources=["upload", "webcam", "clipboard"], height=320)
                objects_img = gr.AnnotatedImage(label="What the detector sees", visible=False, height=320)
                gallery_examples = gr.Gallery(value=examples.paths, label=f"Examples ({examples.kind}): click one",
                                              columns=6, height=170, allow_preview=False, show_label=True,
                                              visible=bool(examples.paths))
            with gr.Column(scale=1):
                bundle = gr.Dropdown(choices=pool.names, value=pool.default, label="Encoder (bundle)",
                                     info="Bundles found in weights/; each loads when first picked. Encoders not "
                                          "built yet are listed under Encoders.")
                loading = gr.Markdown(pool.status_line())
                loading_timer = gr.Timer(1.0, active=True)
                strategy = gr.Radio(choices=list(STRATEGIES), value=d_strategy, label="Decoding strategy",
                                    info="The default is the one chosen for this bundle on two dev sets: "
                                         "Flickr8k photos and everyday (COCO) photos.")
                with gr.Accordion("Decoding options", open=False):
                    controls = {name: option_control(o, d_opts.get(name, o.default), name in visible_options(d_strategy))
                                for name, o in ALL_OPTIONS.items()}
                with gr.Row():
                    caption_btn = gr.Button("Caption", variant="primary")
                    compare_btn = gr.Button("Compare all encoders")
                own_defaults = gr.Checkbox(value=True, label="Compare each bundle with its own default decoding",
                                           info="Untick to compare them all with the strategy and options above.")
                captions_md = gr.Markdown(label="Caption")
                refs_md = gr.Markdown()
        with gr.Tabs():
            with gr.Tab("Compare"):
                table = gr.HTML(css_template=COMPARE_CSS)
            with gr.Tab("Which part of the photo each word depends on"):
                gr.Markdown("Attention bundles (`-attention` in the name; an ensemble with attention members: the first "
                            "one's): where the decoder looked for each word, drawn with every caption (no extra "
                            "pass over the photo). Other bundles: an occlusion map "
                            f"(Explain): each of {cfg.occlusion_grid}x{cfg.occlusion_grid} patches is greyed out in turn; "
                            "red marks the patches whose removal lowers that word's probability the most.")
                explain_btn = gr.Button("Explain the caption")
                explained = gr.Textbox(label="Caption explained", interactive=False)
                gallery = gr.Gallery(label="Per-word maps", columns=4, height="auto")
            with gr.Tab("Model card"):
                first_curve = service.curve(pool.default)
                curve_img = gr.Image(first_curve, label="Training curve", interactive=False, height=300,
                                     visible=first_curve is not None)
                card_md = gr.Markdown(service.card(pool.default) if pool.default else "No bundle.")
            with gr.Tab("Encoders"):
                rows = service.score_rows()
                if rows:
                    score_plots(rows)
                bundle_status = gr.Markdown(encoder_table(service))
                gr.Markdown(probe_table())
                gr.Markdown(detector_table())
            with gr.Tab("Details (JSON)"):
                details = gr.JSON()
        options = gr.JSON(value={}, visible=False)  # the API takes the options as one JSON object

        def gather(s, *values):
            names = visible_options(s)
            return {name: v for name, v in zip(controls, values) if name in names}

        def on_strategy(s):
            names, own = visible_options(s), get_strategy(s).defaults if s in STRATEGIES else {}
            return [gr.update(visible=name in names, **({"value": own[name]} if name in own else {}))
                    for name in controls]

        shown_first = list(examples.paths)

        def current_examples():  # a page loaded after the Hub photos arrived shows them
            if examples.paths == shown_first:
                return gr.skip()
            demo.allowed_paths = sorted({*demo.allowed_paths, *map(os.path.abspath, examples.paths)})
            return gr.Gallery(value=examples.paths, label=f"Examples ({Examples.FLICKR}): click one", visible=True)

        def pick_example(evt: gr.SelectData):
            return examples.paths[evt.index]

        status_outputs = [loading, loading_timer, bundle_status]
        loading_timer.tick(handlers.status, None, status_outputs, api_name=False, queue=False)
        demo.load(handlers.status, None, status_outputs, api_name=False, queue=False)
        gr.api(handlers.status_api, api_name="status", queue=False)
        demo.load(current_examples, None, gallery_examples, api_name=False, queue=False)
        gallery_examples.select(pick_example, None, image, api_name=False, queue=False)
        strategy.change(on_strategy, strategy, list(controls.values()), api_name=False, queue=False)
        gathered = dict(fn=gather, inputs=[strategy, *controls.values()], outputs=options, api_name=False, queue=False)
        caption_btn.click(**gathered).then(handlers.caption, [image, bundle, strategy, options],
                                           [captions_md, refs_md, details], api_name="caption").success(
            handlers.maps, [image, details], [gallery, explained], api_name=False).then(
            handlers.boxes, [image, details], objects_img, api_name=False)
        # Compare: each bundle's own default, unless the box is unticked (then the strategy and options above)
        compare_strategy, compare_options = gr.Textbox(visible=False), gr.JSON(value={}, visible=False)
        compare_btn.click(**gathered).then(
            lambda own, s, o: ("", {}) if own else (s, o), [own_defaults, strategy, options],
            [compare_strategy, compare_options], api_name=False, queue=False).then(
            handlers.compare, [image, compare_strategy, compare_options], [table, refs_md, details], api_name="compare").success(
            handlers.boxes, [image, details], objects_img, api_name=False)
        explain_btn.click(handlers.explain, [image, bundle], [gallery, explained], api_name="explain")
        bundle.change(handlers.card, bundle, card_md, api_name="card")
        bundle.change(lambda b: gr.Image(value=service.curve(b), visible=service.curve(b) is not None), bundle,
                      curve_img, api_name=False, queue=False)
    demo.queue(default_concurrency_limit=cfg.concurrency, max_size=cfg.queue_size)
    if background:
        service.start()
    return demo


def config_from_args(args) -> AppConfig:
    return AppConfig(weights_dir=args.weights, hub_bundles=tuple(args.hub), data_dir=args.data_dir or None,
                     preload=args.preload, concurrency=args.concurrency, queue_size=args.queue_size,
                     encoder_options=dict(args.encoder_options))


def launch_options(demo: gr.Blocks) -> dict:
    """``demo.launch`` arguments: the server may serve the page's own files alone (the example photos and the
    training curves, each named: no folder), and refuses uploads over the size limit."""
    return {"allowed_paths": demo.service.served_files(), "max_file_size": f"{demo.app_config.max_upload_mb}mb",
            "show_error": True}


def launch(demo: gr.Blocks, args) -> None:
    """Serve the page, then start loading (if ``build_demo`` left that to us), then block."""
    demo.launch(server_name=args.host, server_port=args.port, prevent_thread_lock=True, **launch_options(demo))
    demo.start_background()
    demo.block_thread()


def main(argv: list[str] | None = None, head_start=None) -> None:
    """``head_start``: one already started (``python app.py`` starts it before gradio's import); else one is
    started here unless the flags say not to."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    head_start = head_start or start_head_start(args)
    launch(build_demo(config_from_args(args), background=False, head_start=head_start), args)


if __name__ == "__main__":
    main(head_start=HEAD_START)
elif os.environ.get("CAPTION_APP_NO_DEMO") != "1":
    demo = build_demo()  # `gradio app.py` and Spaces' reloader import this; nothing is launched
