"""A captioning page's words: the service's answers (``caption_core.serving``) as Markdown and HTML. Plain
functions over plain data, no web framework: the Gradio page (``app.py``) lays them out, and any other front end
can use them as they are."""

from __future__ import annotations

import html
import json
import os
from typing import Any

from .serving import describe_decoding, test_scores

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def references_md(service, answer: dict) -> str:
    if answer["reference_image"] is None:
        return ("*Not a Flickr8k photo (or too flat to identify): no reference captions.*" if service.refs.available
                else "*No reference index (`references/`) and no dataset (`--data-dir`): no reference captions.*")
    return (f"**Reference captions** (dataset photo `{answer['reference_image']}`):\n\n"
            + "\n".join(f"- {c}" for c in answer["references"]))


SOURCES = {"classifier": "the classifier", "detector": "the detector", "both": "the detector and the classifier"}


def marked(caption: str, guidance: dict | None) -> str:
    """The caption with the words guidance put in shown in bold (the others are the decoder's own choice)."""
    required = set((guidance or {}).get("required_words") or ())
    return " ".join(f"**{w}**" if w in required else w for w in caption.split())


def caption_md(a: dict) -> str:
    rows = a["captions"]
    g = a.get("guidance") if a["strategy"] == "guided" else None
    lines = [f"### {marked(rows[0]['caption'], g)}", ""]
    if len(rows) > 1:
        lines += [f"{i}. {r['caption']}  (score {r['score']})" for i, r in enumerate(rows, 1)] + [""]
    if a["reference_image"]:
        lines.append("Against the references: " + ", ".join(f"{k} {rows[0][k]}" for k in ("BLEU-4", "CIDEr")
                                                             if k in rows[0]))
    if a["imagenet_top5"]:  # what the encoder (or the tagger) recognised: the limit may be the captions' vocabulary
        lines += ["", "What the classifier sees (ImageNet classes): "
                  + ", ".join(f"{c['label']} {c['probability']:.2f}" for c in a["imagenet_top5"])]
    if a["strategy"] == "guided":
        lines += ["", guidance_md(a["guidance"], a["options"])]
    if a.get("object_words") is not None:
        lines += ["", object_words_md(a["object_words"], a.get("words_alone", False))]
    if a.get("attention"):  # an attention bundle: its maps are drawn in the explanation tab
        att = a["attention"]
        whose = f" (the ensemble's first attention member, `{att['member']}`)" if att.get("member") else ""
        lines += ["", f"*Where it looked{whose}: one map per word over the photo's {att['grid'][0]}x{att['grid'][1]} grid, "
                  "in the tab 'Which part of the photo each word depends on' (no extra pass over the photo).*"]
    detect = f" · detect {a['detect_ms']:.0f} ms" if a.get("objects") is not None else ""
    return "\n".join(lines + ["", f"*{a['bundle']} · {describe_decoding(a['strategy'], a['options'])} · "
                                  f"encode {a['encode_ms']:.0f} ms{detect} · decode {a['decode_ms']:.0f} ms*"])


def object_words_md(words: list[str], alone: bool = False) -> str:
    """What a decoder that reads object words was given beside the photo, by who gave it; ``alone``: an ensemble's
    object-word members read them without the photo (an unfamiliar scene)."""
    coco = [w.split(":", 1)[1] for w in words if w.startswith("coco:")]
    imagenet = [w.split(":", 1)[1] for w in words if w.startswith("imagenet:")]
    if not coco and not imagenet:
        return ("*This decoder reads object words beside the photo; the detector and the classifier gave it none "
                "here: every word is the decoder's own reading of the features.*")
    said = ([f"the detector's {', '.join(coco)}"] if coco else []) + ([f"the classifier's {', '.join(imagenet)}"]
                                                                     if imagenet else [])
    if alone:
        return (f"*An unfamiliar scene: nothing the detector found is among what the photo-trained members' captions "
                f"name often, so the member that reads object words wrote from these words alone, not the photo, as "
                f"it learned to from caption text: {'; '.join(said)}. Which words it writes, and in what order, are "
                "its own.*")
    return (f"*Object words it read beside the photo: {'; '.join(said)}. They steer what it writes; which words it "
            "writes, and in what order, are the decoder's own.*")


def guidance_md(g: dict | None, options: dict) -> str:
    if g is None:
        return (f"*Guidance did not fire: no word of an object the classifier knows (animals, vehicles, food, "
                f"furniture, devices, ...) reached {options.get('guide_threshold')}, and it ruled out nothing the "
                "caption could name (plain beam search). Pick the beam strategy to turn it off.*")
    unseen = set(g.get("unseen_words", ()))
    vetoed = [w for w in g["banned_words"] if w not in unseen]
    more = len(vetoed) - 8
    banned = (f"ruled out: {', '.join(vetoed[:8])}" + (f" and {more} more" if more > 0 else "") if vetoed else "")
    if unseen:  # an object scene: the people (and, where it found no animal, the animals) the detector did not find
        banned = "; ".join(x for x in (banned, "the detector sees things but no one here: none of the people or animals "
                                       f"it did not find ({', '.join(g['unseen_words'][:4])}, ...)") if x)
    if not g["word"]:  # the veto alone: nothing confident enough to require, but animals it is sure are absent
        who = "the detector" if unseen and not vetoed else "the classifier"
        return (f"*Guided by {who}: no word required (the classifier's best class, {g['top_class']}, "
                f"{g['class_probability']:.2f}); {banned}. Pick the beam strategy to turn guidance off.*")
    source = g.get("source", "classifier")
    if source == "classifier":
        why = f"its classes {g['probability']:.2f}, most of all {g['top_class']} {g['class_probability']:.2f}"
    else:
        n = g.get("count", 1)
        why = (f"the detector's main object: {g['category']}" + (f", {n} of them" if n > 1 else "")
               + (f", score {g['probability']:.2f}" if source == "detector" else
                  f"; the classifier agrees: {g['top_class']} {g['class_probability']:.2f}"))
    return (f"*Guided by {SOURCES.get(source, source)}: **{g['word']}** required ({why})"
            f"{'; ' + banned if banned else ''}"
            f"{'' if g['met'] else '; no caption with it was found, so this one is unconstrained'}. Words in bold "
            "were put in by guidance; the others are the decoder's own. Pick the beam strategy to turn guidance off.*")


# A table on wide screens; on a phone each bundle is a card (name, caption, scores and time on one line).
COMPARE_CSS = """
table.compare { width: 100%; border-collapse: collapse; }
table.compare th, table.compare td { text-align: left; padding: 6px 8px; vertical-align: top;
  border-bottom: 1px solid var(--border-color-primary); }
table.compare td.num, table.compare th.num { white-space: nowrap; }
@media (max-width: 640px) {
  table.compare thead { display: none; }
  table.compare tr { display: block; padding: 8px 0; border-bottom: 1px solid var(--border-color-primary); }
  table.compare td { display: block; border: none; padding: 2px 4px; }
  table.compare td.bundle { font-weight: 600; }
  table.compare td.num { display: inline-block; padding-right: 12px; }
  table.compare td.num::before { content: attr(data-label) " "; color: var(--body-text-color-subdued); }
}
"""


def compare_html(rows: list[dict]) -> str:
    """One row per bundle: its caption, the decoding it used, the scores against the references (columns only
    for a dataset photo: another photo has none to show) and the time."""
    def td(cls: str, label: str, value: Any) -> str:
        return f'<td class="{cls}" data-label="{label}">{html.escape("" if value is None else str(value))}</td>'

    metrics = [k for k in ("BLEU-4", "CIDEr") if any(k in r for r in rows)]
    head = "".join(f'<th class="num">{k}</th>' for k in metrics)
    body = "".join("<tr>" + td("bundle", "bundle", r["bundle"]) + td("caption", "caption", r["caption"])
                   + td("decoding", "decoding", r.get("decoding", r.get("strategy")))
                   + "".join(td("num", k, r.get(k)) for k in metrics)
                   + td("num", "ms", f"{r['encode_ms']:.0f} + {r['decode_ms']:.0f}") + "</tr>" for r in rows)
    return ('<table class="compare"><thead><tr><th>bundle</th><th>caption</th><th>decoding</th>'
            f'{head}<th class="num">ms (encode + decode)</th></tr></thead><tbody>{body}</tbody></table>')


def encoder_table(service) -> str:
    """Each bundle's encoder, test scores and state (loaded when first picked); encoders not built yet."""
    lines = ["| encoder | bundle | test BLEU-4 | test CIDEr | state | load s | memory MiB |", "|---|---|---|---|---|---|---|"]
    for r in service.bundles.status():
        s = test_scores(service.bundles.manifests[r["bundle"]])
        state = r["state"] + ("; a second process answers meanwhile" if r["head_start"] else "")
        lines.append(f"| {r['encoder']} | `{r['bundle']}` | {s.get('BLEU-4', float('nan')):.3f} | "
                     f"{s.get('CIDEr', float('nan')):.3f} | {state} | {r['load_s'] or ''} | {r['memory_mib'] or ''} |")
    lines += [f"| {enc} | *not built*: `{cmd}` | | | | | |" for enc, cmd in service.bundles.missing_encoders()]
    lines += [f"| ? | `{name}`: {err} | | | | | |" for name, err in service.bundles.errors.items()]
    return "\n".join(lines)


def probe_table(folder: str = BENCHMARKS) -> str:
    """The linear probes (``python -m training probe``: CIFAR-10 accuracy of each encoder's features, pretrained
    and randomly initialised) beside each encoder's float32 extraction speed (``benchmarks/encoder_speed.py``);
    '' when the probes were not run."""
    def read(name: str) -> dict:
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    report, speeds = read("probes.json"), {r["encoder"]: r for r in read("encoder_speed.json").get("rows", [])}
    if not report.get("rows"):
        return ""
    by = {}
    for r in report["rows"]:
        by.setdefault(r["encoder"], {})[r["weights"]] = r
    sub = report.get("subset", {})
    lines = [f"**Are the features pretrained?** A logistic regression on each encoder's features, fit on "
             f"{sub.get('train_images')} CIFAR-10 train photos and scored on {sub.get('test_images')} test photos "
             f"({sub.get('train', '')}); the control is the same network randomly initialised.", "",
             "| encoder | pretrained | random init | images/s (float32, 2 cores) |", "|---|---|---|---|"]
    for enc, kinds in by.items():
        cells = [f"{kinds[k]['accuracy']:.1%}" if "accuracy" in kinds.get(k, {}) else
                 ("not available here" if k in kinds else "-") for k in ("pretrained", "random init")]
        speed = speeds.get(enc, {}).get("images_per_second")
        lines.append(f"| {enc} | {cells[0]} | {cells[1]} | {speed if speed else '-'} |")
    return "\n".join(lines)


def describe_objects(objects: dict) -> str:
    """A photo's detections in a few words: 'person x2, dog' (or 'nothing it knows')."""
    counts = objects.get("counts") or {}
    return ", ".join(f"{c} x{n}" if n > 1 else c for c, n in counts.items()) or "nothing it knows"


def detector_table(folder: str = BENCHMARKS) -> str:
    """The COCO detector's own figures (``python -m training detector``: on the out-of-domain dev set, the share of
    photos whose main object it finds, and its time per photo beside the default bundle's encoder); '' when it
    was not measured."""
    try:
        with open(os.path.join(folder, "detector.json"), encoding="utf-8") as f:
            r = json.load(f)
    except (OSError, ValueError):
        return ""
    found, speed = r.get("coco", {}), r.get("speed", {})
    lines = [f"**The object detector** ({r.get('detector', '?')}, COCO-trained; its boxes are drawn over each photo and "
             "guided decoding may require what it sees). On the out-of-domain dev set "
             f"({found.get('photos', '?')} COCO photos, the main object = the category with the largest box):", "",
             "| main object among its detections | its largest detection is the main object | ms per photo (float32) | "
             "the default bundle's encoder | detector / encoder |", "|---|---|---|---|---|",
             f"| {found.get('main_found', '?')} of {found.get('photos', '?')} | {found.get('largest_is_main', '?')} of "
             f"{found.get('photos', '?')} | {speed.get('detector_ms', '?')} | {speed.get('encoder_ms', '?')} "
             f"({speed.get('bundle', '?')}) | {speed.get('ratio', '?')}x |"]
    return "\n".join(lines)


def bundles_table(weights_dir: str) -> str:
    """Every bundle of ``weights_dir`` in one Markdown table (the README's, kept true by a test): its encoder and
    decoder, its default decoding, its test scores on Flickr8k and its out-of-domain dev scores with that decoding
    (``python -m training choose``), its size on disk (an ensemble's members not counted: it refers to them)."""
    from .bundle import best_first, list_bundles
    from .serving import encoder_label

    found = {b["name"]: b for b in list_bundles(weights_dir) if "manifest" in b}
    lines = ["| bundle | encoder | decoder | default decoding | Flickr8k test CIDEr / BLEU-4 | coco-mini CIDEr, main "
             "object named | MiB |", "|---|---|---|---|---|---|---|"]
    for name in best_first({n: b["manifest"] for n, b in found.items()}):
        m, path = found[name]["manifest"], found[name]["path"]
        entry = m["decoder"]
        kinds = sorted({x["config"].get("kind", "merge") + (" reading object words" if x["config"].get("object_words")
                                                              else "") for x in entry.get("members", [entry])})
        decoder = ("ensemble of " if "members" in entry else "") + " + ".join(kinds) + (
            f" (the words alone on unfamiliar scenes, {entry['scenes']['share']:g} of the mean)" if entry.get("scenes")
            else "")
        d = m.get("default_decoding") or {}
        s = test_scores(m)
        ood = (m.get("ood_dev") or {})
        row = ood["rows"][ood["chosen"]]["ood_dev"] if ood.get("rows") else {}
        size = sum(os.path.getsize(os.path.join(path, f)) for f in m["files"]) / 2**20
        lines.append(f"| `{name}` | {encoder_label(m['encoder'])} | {decoder} | "
                     f"{describe_decoding(d.get('strategy', 'beam'), d.get('options') or {})} | "
                     f"{s.get('CIDEr', float('nan')):.3f} / {s.get('BLEU-4', float('nan')):.3f} | "
                     + (f"{row['CIDEr']:.3f}, {row.get('main_object_named')}/{row.get('main_object_of')}" if row else "-")
                     + f" | {size:.1f} |")
    return "\n".join(lines)
