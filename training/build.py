"""The pipeline behind ``python -m training build``: features -> train -> evaluate -> export."""

from __future__ import annotations

import dataclasses
import logging
import os
import time


from caption_core.bundle import BASELINE_FORMAT, save_bundle, test_metrics, update_manifest, verify_bundle
from caption_core.captioner import Captioner
from caption_core.config import Config
from caption_core.decoders import load_decoder
from caption_core.decoding import get_strategy
from caption_core.object_words import object_tags
from caption_core.encoders import get_encoder_class
from caption_core.text import Vocabulary

from .card import CURVE_FILE, hub_metadata, training_curve
from .common import command_line, git_commit, machine, read_json, versions, write_json
from .datasets import dataset_name, load_splits  # noqa: F401  (build.load_splits: where the commands import it)
from .evaluate import METRICS, score_test
from .features import cache_dir, extract_features
from .train_decoder import DecoderTrainConfig, train_decoder

log = logging.getLogger("training.build")
DEFAULT_OOD_DEV = os.path.join("..", "shared", "data", "coco-mini")  # its photos' captions never train


def encoder_for(name: str, weights: str | None = None, options: dict | None = None):
    """The encoder ``name`` for training: ``options`` are config fields, ``weights`` its weights field."""
    cls = get_encoder_class(name)
    return cls(cls.training_config(weights, options))


def model_card(name: str, manifest: dict, curve: bool = False) -> str:
    t = manifest["training"]
    metrics = manifest.get("metrics", {})
    encoder_cls = get_encoder_class(manifest["encoder"]["name"])
    test = test_metrics(manifest)
    dc = manifest["decoder"]["config"]
    attention = dc.get("kind") == "attention"
    tags = ["image-captioning", "soft-attention" if attention else "merge-model", "lstm",
            manifest["encoder"]["name"].replace("_", "-")] + (["scst"] if t.get("scst") else [])
    grid = manifest["encoder"].get("grid_shape")
    decoder_words = (f"soft-attention LSTM decoder over its {grid[0]}x{grid[1]} grid"
                     + (f" and {manifest['encoder'].get('grid_extra')} global token" if manifest["encoder"].get("grid_extra") else "")
                     + f" (Embedding {dc['embed_dim']}, LSTM {dc['units']}, attention {dc.get('attention_dim')}, "
                     f"context {dc.get('context_dim')}; Xu et al. 2015)" if attention and grid else
                     "its members' decoders, their next-word probabilities averaged (below)" if t.get("ensemble") else
                     f"merge decoder (Embedding {dc['embed_dim']}, LSTM {dc['units']})")
    lines = [hub_metadata(name, manifest, encoder_cls.licence_id, tags, test) + f"# {name}", "",
             f"Image captioning bundle: `{manifest['encoder']['name']}` image features + {decoder_words}, "
             f"vocabulary of {manifest['vocabulary']['size']} words.", "",
             "## Training", "",
             *(_ensemble_lines(t) if t.get("ensemble") else [
                 f"- Data: `{t.get('dataset')}`, train split ({t.get('train_images')} images, {t.get('train_captions')} "
                 f"captions); model chosen by the dev-split loss (best epoch {t.get('best_epoch')} of {t.get('epochs_run')}).",
                 f"- Command: `{t.get('command')}` (seed {t.get('seed')}).",
                 f"- Time: {_feature_time(t)}, decoder {t.get('decoder_seconds')} s on "
                 f"{t.get('machine', {}).get('cpu')} ({t.get('machine', {}).get('cores')} cores)."]),
             *([f"- Encoder weights: {manifest['encoder']['name']} tensors "
                f"`{manifest['encoder']['weights_fingerprint']}`; the bundle refuses other weights."]
               if manifest["encoder"].get("weights_fingerprint") else []),
             f"- Encoder weights licence: {encoder_cls.licence}.",
             *([f"- Encoder trained here from scratch on CIFAR-10: test accuracy "
                f"{t['encoder_training']['test_accuracy']:.4f} on {t['encoder_training']['test_images']} images after "
                f"{t['encoder_training']['epochs']} epochs ({t['encoder_training']['train_seconds']:.0f} s)."]
               if t.get("encoder_training") else []), "",
             f"- Default decoding: {manifest.get('default_decoding')}"
             + (" (chosen on Flickr8k dev and an out-of-domain dev set together: see below)" if manifest.get("ood_dev")
                else f" (chosen on the {manifest['tuning']['split']} split by {manifest['tuning']['metric']})"
                if manifest.get("tuning") else ""), "",
             *(_files_lines(manifest)),
             *([f"![Training curve]({CURVE_FILE})", ""] if curve else []),
             "## Metrics", ""]
    for split_name, by_strategy in metrics.items():
        lines.append(f"{split_name} (pycocoevalcap):")
        lines.append("")
        lines += _metrics_table(by_strategy)
        lines.append("")
    if t.get("scst"):
        lines += _scst_section(t["scst"], test_metrics(manifest, "cross_entropy_metrics"), test)
    if manifest.get("ood_dev"):
        lines += _ood_section(manifest["ood_dev"])
    if manifest.get("guidance"):
        lines += _guidance_section(manifest["guidance"])
    lines += ["## Known limits", "",
              "- The Flickr8k training photos were 224x224 copies squashed from ~500x375 (aspect ratio lost); "
              "photos are squashed the same way at inference.",
              "- Flickr8k is small (6,000 training photos): captions are generic and biased towards people and dogs.",
              *(["- The encoder computes in bfloat16 where the CPU multiplies bf16 natively (AVX512_BF16, AMX; "
                 "encoder precision 'auto'), else in float32. Tables marked '(bfloat16 features)' were measured "
                 "that way; the others in float32. For float32 everywhere: "
                 "`Captioner.from_bundle(path, {\"precision\": \"float32\"})`."]
                if "precision" in {f.name for f in dataclasses.fields(get_encoder_class(manifest["encoder"]["name"]).config_class)}
                else []),
              ""]
    return "\n".join(lines)


def _files_lines(manifest: dict) -> list[str]:
    """How the bundle's weights are stored, and where an ensemble's members are."""
    entry = manifest["decoder"]
    members = [m["bundle"] for m in entry.get("members", []) if "bundle" in m]
    lines = []
    if members:
        lines.append(f"- Members: this bundle refers to the bundles {', '.join(f'`{m}`' for m in members)} by name and "
                     "their decoders' sha256 (it holds none of their weights): keep them beside it in the same folder; "
                     "from the Hub, `hf://owner/repo/<this bundle>` brings them along (`python -m training push` "
                     "uploads them together).")
    if entry.get("storage") == "float16":
        lines.append("- Decoder weights stored as float16 (half the bytes); decoding computes in float32. What that "
                     "changed on Flickr8k dev, per bundle: docs/weights.md in the project.")
    return lines + ([""] if lines else [])


def _ood_section(o: dict) -> list[str]:
    """What ``python -m training choose`` measured: each candidate decoding on Flickr8k dev and on the
    out-of-domain dev set, and the one chosen."""
    def decoding(r: dict) -> str:
        g = {k[6:]: v for k, v in r["options"].items() if k.startswith("guide_")}
        if r["strategy"] != "guided":
            return r["strategy"]
        parts = [f"threshold {g.get('threshold')}"] + (["veto alone"] if g.get("veto_alone") else [])
        if g.get("detector", 1.0) < 1.0:
            parts.append(f"detector {g['detector']}" + (" first" if g.get("detector_first", True) else "")
                         + (", counted" if g.get("count") else ""))
        return f"guided ({', '.join(parts)})"

    lines = ["## Out-of-domain dev set and the default decoding", "",
             f"Every candidate decoding was scored on two dev sets: Flickr8k dev and `{os.path.basename(os.path.normpath(o['ood_set']))}` "
             "(COCO photos of everyday scenes, COCO references). Rule: the best out-of-domain CIDEr among the "
             f"decodings within {o['config']['max_dev_drop']} of the best Flickr8k dev CIDEr, with no dangling "
             f"endings and at least {o['config']['min_distinct']:.0%} distinct dev captions (or beam search's share). "
             "No test split was read to choose.", "",
             "| decoding | Flickr8k dev CIDEr | distinct | Out-of-domain CIDEr | main object named | eligible |",
             "|---|---|---|---|---|---|"]
    for i, r in enumerate(o["rows"]):
        d, x = r["flickr_dev"], r["ood_dev"]
        mark = "**chosen**" if i == o["chosen"] else ("yes" if i in o["eligible"] else "no")
        lines.append(f"| {decoding(r)} | {d['CIDEr']:.3f} | {d['distinct_share']:.0%} | {x['CIDEr']:.3f} | "
                     f"{x.get('main_object_named', '-')}/{x.get('main_object_of', '-')} | {mark} |")
    return lines + [""]


def _guidance_section(g: dict) -> list[str]:
    """What ``python -m training guide`` measured (the threshold chosen on CIFAR-10 train + Flickr8k dev)."""
    c, f = g["cifar_test"], g["flickr_test"]
    pct = "{:.1%}".format
    return ["## Guided decoding", "",
            f"The `guided` strategy requires the word that the ImageNet classifier ({g['tagger']}) is confident of "
            f"(constrained beam search) and bans the words of the same kind it rules out. Threshold "
            f"{g.get('measured_threshold', g['choice']['threshold'])}, chosen on CIFAR-10 train and the Flickr8k dev "
            "split (`python -m training guide`); "
            + ("on by default: the dev captions it changed scored better per image (90% bootstrap interval)."
               if g["choice"]["threshold"] is not None else
               "off by default (pick the `guided` strategy): on dev the captions it changed did not score "
               "better with 90% confidence."), "",
            "| test set | measure | unguided | guided |", "|---|---|---|---|",
            f"| CIFAR-10 test, {c['images']} images | caption names the true class | {pct(c['unguided']['true'])} | "
            f"{pct(c['guided']['true'])} |",
            f"| | names another CIFAR-10 class | {pct(c['unguided']['other'])} | {pct(c['guided']['other'])} |",
            f"| Flickr8k test | CIDEr | {f['unguided']['CIDEr']:.4f} | {f['guided']['CIDEr']:.4f} |",
            f"| | BLEU-4 | {f['unguided']['BLEU-4']:.4f} | {f['guided']['BLEU-4']:.4f} |",
            f"| | distinct captions, dangling endings | {pct(f['unguided']['distinct_share'])}, "
            f"{f['unguided']['dangling_endings']} | {pct(f['guided']['distinct_share'])}, {f['guided']['dangling_endings']} |",
            f"| | guidance fired / changed the caption | | {pct(f['guided']['fired'])} / {pct(f['guided']['changed'])} |",
            ""]


def _ensemble_lines(t: dict) -> list[str]:
    lines = [f"- An ensemble of {len(t['ensemble'])} bundles trained on `{t.get('dataset')}` "
             f"({t.get('train_images')} train images): {t.get('combination')}. Nothing was trained for it.",
             f"- Command: `{t.get('command')}`.", "",
             "| member | encoder | SCST | its test BLEU-4 | its test CIDEr | with its default decoding |",
             "|---|---|---|---|---|---|"]
    for m in t["ensemble"]:
        test = m.get("test") or {}
        lines.append(f"| {m['bundle']} | {m['encoder']} | {'yes' if m.get('scst') else 'no'} | "
                     + " | ".join(f"{test[k]:.3f}" if test.get(k) is not None else "-" for k in ("BLEU-4", "CIDEr"))
                     + f" | {test.get('decoding', '-')} |")
    return lines + [""]


def _feature_time(t: dict) -> str:
    rates = {k: v for k, v in (t.get("feature_images_per_second") or {}).items() if v}
    if not rates:
        return f"features read from the cache ({t.get('feature_seconds')} s)"
    return ("feature extraction at " + ", ".join(f"{v:.1f} images/s ({k})" for k, v in rates.items())
            + f" ({t.get('feature_seconds')} s in all; extraction speeds are measured when not cached)")


def _metrics_table(by_strategy: dict, label: str = "strategy") -> list[str]:
    lines = [f"| {label} | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for strategy, s in by_strategy.items():
        lines.append(f"| {strategy} | " + " | ".join(f"{s[k]:.3f}" if k in s else "-" for k in METRICS) + " |")
    return lines


def _scst_section(scst: dict, before: dict, after: dict) -> list[str]:
    """``before`` / ``after``: strategy -> test scores of the cross-entropy and the SCST model."""
    """Model card: the SCST stage, its dev curve, cross-entropy vs SCST on test, ten examples."""
    c = scst["config"]
    lines = ["## Self-critical sequence training", "",
             f"After cross-entropy training, the decoder was fine-tuned for CIDEr-D (Rennie et al. 2017): "
             f"{c['samples']} sampled captions per training photo, baseline '{c['baseline']}', learning rate "
             f"{c['learning_rate']:g}, <end> rewarded as a word: {c['end_token']}. Epoch chosen on dev CIDEr among "
             f"epochs whose dev captions stay >= {c['min_distinct']:.0%} distinct with <= {c['max_dangling']} "
             f"dangling endings: epoch {scst['best_epoch']} of {scst['epochs_run']} ({scst.get('stopped') or 'all epochs run'}).",
             f"- Command: `{scst['command']}`; {scst['seconds']:.0f} s in all, epochs of "
             + ", ".join(f"{x:.0f}" for x in scst["epoch_seconds"]) + f" s on {scst['machine'].get('cpu')} "
             f"({scst['machine'].get('cores')} cores).", "",
             "Dev curve (epoch 0: the cross-entropy model; default decoding):", "",
             "| epoch | CIDEr | BLEU-4 | distinct | words | dangling | train reward |", "|---" * 7 + "|"]
    for h in scst["dev_curve"]:
        lines.append(f"| {h['epoch']} | {h['CIDEr']:.3f} | {h['BLEU-4']:.3f} | {h['distinct_share']:.0%} | "
                     f"{h['words_used']} | {h['dangling_endings']} | "
                     + (f"{h['train_reward']:.3f} |" if "train_reward" in h else "- |"))
    lines += ["", "Test split, cross-entropy vs SCST (pycocoevalcap; caption statistics of the default decoding):", "",
              "| model, strategy | BLEU-4 | METEOR | CIDEr | distinct | words | dangling |", "|---" * 7 + "|"]
    for tag, by_strategy in (("cross-entropy", before), ("SCST", after)):
        for strategy, s in by_strategy.items():
            st = s.get("caption_statistics") or {}
            lines.append(f"| {tag}, {strategy} | {s['BLEU-4']:.3f} | {s.get('METEOR', float('nan')):.3f} | "
                         f"{s['CIDEr']:.3f} | " + (f"{st['distinct_share']:.0%} | {st['words_used']} | "
                                                 f"{st['dangling_endings']} |" if st else "- | - | - |"))
    lines += ["", "Ten test photos (default decoding):", "", "| photo | cross-entropy | SCST |", "|---|---|---|"]
    for e in scst.get("examples", []):
        lines.append(f"| {e['image_id']} | {e['cross_entropy']} | {e['scst']} |")
    return lines + [""]


@dataclasses.dataclass(frozen=True)
class BuildConfig(Config):
    encoder: str  # encoder name (see caption_core.encoders.ENCODERS)
    dataset: str  # Flickr folder, parquet folder or Hub id
    out: str = "weights"  # bundles go to <out>/<name>
    name: str | None = None  # bundle name; default <encoder>-<dataset>
    weights: str | None = None  # encoder weights (a file, a folder, or vit_custom's backbone.keras)
    encoder_options: dict = dataclasses.field(default_factory=dict)  # more encoder config fields: {"precision": "float32"}
    cache: str = "cache"  # feature cache
    runs: str = "runs"  # training runs (checkpoints)
    strategies: tuple = ("greedy", "beam")  # decoding strategies evaluated on the test split
    default_strategy: str = "beam"  # the bundle's default decoding until `tune` chooses one on dev
    default_options: dict = dataclasses.field(default_factory=dict)  # its options ({"beam_width": 3}); others: defaults
    export: bool = True  # write the bundle (False: only report metrics, e.g. the blind baseline)
    ood_dev: tuple = (DEFAULT_OOD_DEV,)  # COCO-format dev folders: with --text, their photos' captions never train

    def __post_init__(self):  # unknown names fail here, before any data is read
        get_encoder_class(self.encoder)
        for name in (self.default_strategy, *self.strategies):
            get_strategy(name)
        get_strategy(self.default_strategy).make_options(self.default_options)


def build(cfg: BuildConfig, train_cfg: DecoderTrainConfig | None = None, resume: bool = True) -> dict:
    """Features -> decoder -> test metrics -> bundle. Returns the manifest (or the metrics)."""
    name = cfg.name or f"{cfg.encoder}-{dataset_name(cfg.dataset)}" + ("-blind" if train_cfg and train_cfg.blind else "")
    run_dir = os.path.join(cfg.runs, name)
    train_cfg = train_cfg or DecoderTrainConfig(out=run_dir)
    if train_cfg.out != run_dir:
        train_cfg = dataclasses.replace(train_cfg, out=run_dir)
    t_start = time.perf_counter()
    splits = load_splits(cfg.dataset)
    options = dict(cfg.encoder_options)
    if train_cfg.decoder.kind == "attention" and "pooling" not in options:
        options["pooling"] = "grid"  # what an attention decoder reads
    encoder = encoder_for(cfg.encoder, cfg.weights, options)
    if train_cfg.decoder.kind == "attention" and not encoder.grid_cells:
        raise ValueError(f"encoder '{cfg.encoder}' gives no grid of cells for an attention decoder "
                         "(encoders with pooling='grid': efficientnet_lite*, xception, dinov2)")
    t0 = time.perf_counter()
    feats = {s: extract_features(encoder, ex, cfg.dataset, s, cfg.cache) for s, ex in splits.items()}
    feature_seconds = time.perf_counter() - t0
    feature_rates = {s: (read_json(os.path.join(cache_dir(cfg.cache, encoder, cfg.dataset), s, "index.json")) or {})
                     .get("images_per_second") for s in splits}
    print(f"features ready in {feature_seconds:.0f} s (extraction rates, images/s: {feature_rates})", flush=True)
    text = None
    if train_cfg.text_mix > 0:  # caption text read beside the photos (held out: Flickr8k dev/test, coco-mini)
        from .pretrain_text import training_text

        text, text_report = training_text(train_cfg.text, cfg.dataset, cfg.ood_dev)
        print(f"caption text: {len(text)} captions without photos ({text_report})", flush=True)
    signals = word_signals(encoder, splits, feats, cfg.dataset, cfg.cache) if train_cfg.read_words else {}
    t0 = time.perf_counter()
    state = train_decoder(train_cfg, splits["train"], *feats["train"], splits["dev"], *feats["dev"], resume=resume,
                          grid_cells=encoder.grid_cells, text_captions=text, train_signals=signals.get("train"),
                          dev_signals=signals.get("dev"))
    decoder_seconds = sum(h["seconds"] for h in state["history"])
    vocab = Vocabulary.load(os.path.join(run_dir, "vocab.json"))
    decoder = load_decoder(os.path.join(run_dir, "best.keras"),
                           train_cfg.decoder_config(len(vocab), encoder.output_dim, encoder.grid_cells,
                                                    object_tags(vocab) if train_cfg.read_words else ()))
    strategy = get_strategy(cfg.default_strategy)
    default = {"strategy": strategy.name,
               # every option of the strategy but max_length, which follows the decoder unless given
               "options": {k: v for k, v in strategy.make_options(cfg.default_options).to_dict().items()
                           if k != "max_length" or k in cfg.default_options}}
    training = {"dataset": cfg.dataset, "dataset_name": dataset_name(cfg.dataset), "blind": train_cfg.blind,
                "train_images": len(splits["train"]), "train_captions": state["train_captions"],
                "best_epoch": state["best_epoch"], "epochs_run": state["epochs_done"],
                "best_dev_loss": state["best_dev_loss"], "stopped": state["stopped"], "history": state["history"],
                "decoder_train": train_cfg.to_dict(), "seed": train_cfg.seed, "command": command_line(),
                "feature_seconds": round(feature_seconds, 1), "feature_images_per_second": feature_rates,
                "decoder_seconds": round(decoder_seconds, 1),
                **({"text": {"init_from": state.get("init_from"), "corpus": train_cfg.text or None,
                             "text_captions": state.get("text_captions", 0),
                             "text_per_epoch": state.get("text_per_epoch", 0)}}
                   if train_cfg.init_from or train_cfg.text_mix > 0 else {}),
                "machine": machine(), "versions": versions(), "git_commit": git_commit()}
    if encoder.provenance():  # how the encoder itself was trained (vit_custom: CIFAR-10 accuracy, time, hardware)
        training["encoder_training"] = encoder.provenance()
    manifest = {"name": name, "default_decoding": default, "training": training,
                "encoder": encoder.describe(), "decoder": {"config": decoder.config.to_dict()},
                "vocabulary": {"size": len(vocab)}}
    captioner = Captioner(encoder, decoder, vocab, manifest, name)
    metrics, caption_files, _ = score_test(captioner, name, dataset_name(cfg.dataset), splits["test"], *feats["test"],
                                           cfg.strategies, cache=cfg.cache)
    training["total_seconds"] = round(time.perf_counter() - t_start, 1)
    write_json(os.path.join(run_dir, "metrics.json"), {"name": name, "metrics": metrics, "training": training})
    if train_cfg.blind:  # the language-only baseline: its scores are what it is for, not a bundle to serve
        record = {"format": BASELINE_FORMAT, "name": name, "kind": "language-only (zeroed image features)",
                  "default_decoding": default, "metrics": metrics, "training": training}
        if cfg.export:
            os.makedirs(cfg.out, exist_ok=True)
            write_json(os.path.join(cfg.out, f"{name}.json"), record)
            print(f"baseline scores written: {os.path.join(cfg.out, name + '.json')}", flush=True)
        return record
    if not cfg.export:
        return {"name": name, "metrics": metrics, "training": training}
    folder = os.path.join(cfg.out, name)
    manifest.update(metrics=metrics)
    manifest["decoder"]["config"] = decoder.config.to_dict()
    save_bundle(folder, encoder=encoder, decoder=decoder, vocab=vocab, training=training, metrics=metrics,
                default_decoding=default, extra_files=caption_files)
    full = refresh_card(folder)
    print(f"bundle written: {folder}", flush=True)
    return full


def word_signals(encoder, splits: dict, feats: dict, dataset: str, cache: str) -> dict:
    """What a decoder that reads object words reads them from, per split: (class probabilities (N, 1000), the COCO
    detector's ``Objects`` per photo), row for row with the split's features; both cached."""
    from caption_core.detectors import shared_detector, shared_detector_error

    from .detections import detect_photos
    from .guide import split_class_probs

    detector = shared_detector()
    if detector is None:
        raise ValueError(f"--read-words needs the COCO detector, and none could be had ({shared_detector_error()}): "
                         "see docs/detector.md")
    return {s: (split_class_probs(encoder, ex, feats[s][0], dataset, s, cache),
                detect_photos(detector, [(e.image_id, e.image) for e in ex], cache, what=f"{dataset_name(dataset)} [{s}]"))
            for s, ex in splits.items()}


def refresh_card(folder: str) -> dict:
    """(Re)write the bundle's model card from its manifest and record its checksum."""
    manifest = verify_bundle(folder)
    curve = training_curve(os.path.join(folder, CURVE_FILE), manifest.get("training", {}))
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
        f.write(model_card(manifest["name"], manifest, curve))
    return update_manifest(folder, add_files=["README.md"] + ([CURVE_FILE] if curve else []))
