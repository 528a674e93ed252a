"""What a model card carries besides its text: the training curve as a small PNG (drawn with Pillow,
no plotting library), and the Hugging Face model-card metadata (YAML front matter: licence, datasets,
tags, and a ``model-index`` with the test scores, so a pushed bundle shows them on the Hub)."""

from __future__ import annotations

import json

from PIL import Image, ImageDraw, ImageFont

CURVE_FILE = "training_curve.png"
HUB_DATASET = "jxie/flickr8k"  # the Hub copy of Flickr8k (same split sizes as the official lists)


def curve_image(series: dict[str, list[tuple[float, float]]], title: str, y_label: str,
                marker: float | None = None, size: tuple[int, int] = (640, 360)) -> Image.Image:
    """Line chart of ``series`` (name -> [(x, y)]) with axes, ticks and a legend; ``marker``: an x to mark
    (the chosen epoch) with a dashed line."""
    w, h = size
    left, right, top, bottom = 64, 16, 36, 44
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    points = [p for s in series.values() for p in s]
    if not points:
        return img
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    pad = (y1 - y0) * 0.08 or 0.1
    y0, y1 = y0 - pad, y1 + pad
    x1 = x1 if x1 > x0 else x0 + 1

    def at(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (w - left - right), top + (y1 - y) / (y1 - y0) * (h - top - bottom))

    d.rectangle([left, top, w - right, h - bottom], outline="#444")
    for i in range(5):  # y ticks
        y = y0 + (y1 - y0) * i / 4
        px, py = at(x0, y)
        d.line([left, py, w - right, py], fill="#e5e5e5")
        d.text((4, py - 6), f"{y:.3g}", fill="#333", font=font)
    step = max(1, round((x1 - x0) / 10))
    x = x0
    while x <= x1 + 1e-9:  # x ticks
        px, _ = at(x, y0)
        d.text((px - 4, h - bottom + 6), f"{x:g}", fill="#333", font=font)
        x += step
    if marker is not None:
        px, _ = at(marker, y0)
        for yy in range(top, h - bottom, 8):
            d.line([px, yy, px, min(yy + 4, h - bottom)], fill="#888")
    colours = ["#2563eb", "#dc2626", "#16a34a", "#9333ea"]
    for (name, s), colour in zip(series.items(), colours):
        xy = [at(x, y) for x, y in s]
        if len(xy) > 1:
            d.line(xy, fill=colour, width=2)
        for px, py in xy:
            d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
    lx = left + 10
    for (name, _), colour in zip(series.items(), colours):
        d.rectangle([lx, top + 8, lx + 12, top + 16], fill=colour)
        d.text((lx + 16, top + 6), name, fill="#111", font=font)
        lx += 24 + 7 * len(name)
    d.text((left, 10), title, fill="#111", font=font)
    d.text((w // 2 - 20, h - 18), "epoch", fill="#333", font=font)
    d.text((4, top - 22), y_label, fill="#333", font=font)
    return img


def training_curve(path: str, training: dict) -> bool:
    """The cross-entropy run's train and dev loss per epoch (and the SCST run's dev CIDEr beside it, as a
    second panel, where there was one) -> ``path``. False when the manifest has no history."""
    history = training.get("history") or []
    if not history:
        return False
    loss = {"train loss": [(h["epoch"], h["train_loss"]) for h in history],
            "dev loss": [(h["epoch"], h["dev_loss"]) for h in history]}
    panels = [curve_image(loss, "Cross-entropy training (chosen epoch dashed)", "loss", training.get("best_epoch"))]
    scst = training.get("scst")
    if scst:
        panels.append(curve_image({"dev CIDEr": [(h["epoch"], h["CIDEr"]) for h in scst["dev_curve"]]},
                                  "SCST (epoch 0: the cross-entropy model)", "dev CIDEr", scst.get("best_epoch")))
    out = Image.new("RGB", (sum(p.width for p in panels), max(p.height for p in panels)), "white")
    for i, panel in enumerate(panels):
        out.paste(panel, (sum(p.width for p in panels[:i]), 0))
    out.save(path, optimize=True)
    return True


def hub_metadata(name: str, manifest: dict, licence_id: str, tags: list[str], scores: dict[str, dict]) -> str:
    """YAML front matter in the Hugging Face model-card format. ``scores``: strategy -> test metrics."""
    dataset = manifest.get("training", {}).get("dataset_name", "flickr8k")

    def q(text: str) -> str:
        return json.dumps(text)  # a JSON string is a valid YAML scalar

    lines = ["---", f"license: {licence_id}", "library_name: keras", "pipeline_tag: image-to-text",
             "datasets:", f"- {HUB_DATASET}" if dataset == "flickr8k" else f"- {q(dataset)}", "tags:"]
    lines += [f"- {t}" for t in tags]
    lines += ["metrics:", "- bleu", "- meteor", "- rouge", "- cider", "model-index:", f"- name: {q(name)}",
              "  results:", "  - task:", "      type: image-to-text", "      name: Image captioning", "    dataset:",
              f"      type: {HUB_DATASET if dataset == 'flickr8k' else q(dataset)}", f"      name: {q(dataset.capitalize())}",
              "      split: test", "    metrics:"]
    names = {"BLEU-4": "bleu", "METEOR": "meteor", "ROUGE-L": "rouge", "CIDEr": "cider"}
    for strategy, s in scores.items():
        for metric, kind in names.items():
            if metric in s:
                lines += [f"    - type: {kind}", f"      value: {round(float(s[metric]), 4)}",
                          f"      name: {q(f'{metric} ({strategy})')}"]
    return "\n".join(lines + ["---", ""])
