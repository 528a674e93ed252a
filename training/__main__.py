"""python -m training <command>: build, evaluate and export caption bundles.

Commands
  features       extract and cache encoder features for a dataset's splits
  train-decoder  train the merge decoder on cached features (checkpoints, --resume)
  pretrain-text  the merge decoder's language side trained on caption text without photos (COCO, Flickr30k):
                 a start for build --init-from (checkpoints, resumes)
  train-vit      train the custom ViT encoder on CIFAR-10 (checkpoints, --resume)
  evaluate       caption a split with a bundle and score it (pycocoevalcap); writes into the manifest
  tune           choose the default decoding (beam width, length penalty) on the dev split
  build          features -> train -> evaluate -> export a bundle into weights/
  scst           fine-tune a bundle's decoder for CIDEr-D (self-critical sequence training)
  references     the reference index the app ships: every photo's id, split, captions, fingerprint
  wordmap        ImageNet classes -> caption words from WordNet (caption_core/data/imagenet_words.json)
  guide          guided decoding: threshold chosen on held-out data, CIFAR-10 and Flickr8k test measured
  coco           caption a COCO-format folder (the out-of-domain dev set) and score it: pycocoevalcap, the
                 main object named, distinct captions, dangling endings
  choose         the default decoding chosen on Flickr8k dev and an out-of-domain dev set together
  card           rewrite a bundle's model card (README.md, training curve) from its manifest
  ensemble       several bundles served as one (their next-word probabilities averaged)
  probe          linear probes on CIFAR-10 for each encoder and its randomly initialised control
  fingerprint    record the tensor fingerprint of a bundle's encoder weights (bundles made before it)
  compact        bundles written before float16 storage: their decoders stored as float16, ensembles' copied members
                 replaced by references to the member bundles beside them
  detector       the COCO detector measured: the main object found on a COCO-format dev set, its time per photo
  table          every bundle's headline figures as the README's table (--write README.md rewrites it there)
  push           upload a bundle to a Hugging Face Hub repository with a model card (an ensemble with its members)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from caption_core.config import add_arguments, from_arguments, parse_option

DEFAULT_FLICKR = os.path.join("..", "shared", "data", "flickr8k")
DEFAULT_COCO = os.path.join("..", "shared", "data", "coco-mini")
DEFAULT_TEXT = os.path.join("..", "shared", "data", "caption-text")


def _encoder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder-option", dest="encoder_options", type=parse_option, action="append", default=[],
                   metavar="KEY=VALUE", help="encoder config field, repeatable: precision=float32, compile=true, "
                   "batch_size=8 (see the encoder's config class)")


def _decoder_args(p: argparse.ArgumentParser) -> None:
    from .train_decoder import DecoderTrainConfig

    add_arguments(p.add_argument_group("decoder training"), DecoderTrainConfig, exclude=("out", "vocab_size", "feature_dim", "grid_cells",
                                                                                             "object_words"))
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")


def _decoder_config(args, out: str):
    from .train_decoder import DecoderTrainConfig

    return from_arguments(DecoderTrainConfig, args, out=out)


def _text_config_class():
    from .train_decoder import DecoderTrainConfig

    return DecoderTrainConfig


def parser() -> argparse.ArgumentParser:
    from caption_core.decoding import add_decoding_arguments
    from caption_core.encoders import ENCODERS
    from caption_core.encoders.vit_custom import ViTCustomConfig

    from .build import BuildConfig
    from .scst import SCSTConfig
    from .train_vit import ViTTrainConfig

    p = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    encoders = sorted(ENCODERS)

    f = sub.add_parser("features", help="extract and cache features")
    f.add_argument("--encoder", required=True, choices=encoders)
    f.add_argument("--weights", help="encoder weights: a file, a folder or a Hub id (default: the encoder's)")
    f.add_argument("--dataset", default=DEFAULT_FLICKR, help="Flickr folder, parquet folder or Hub id (default: %(default)s)")
    f.add_argument("--splits", default="train,dev,test", help="comma-separated (default: %(default)s)")
    f.add_argument("--cache", default="cache", help="feature cache folder (default: %(default)s)")
    f.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local, or ray: Ray Data actors, on this machine or the cluster RAY_ADDRESS names (the batch "
                        "engine: caption_core/ray_engine.py) (default: %(default)s)")
    f.add_argument("--workers", type=int, default=1, help="--engine ray: encoder actors (default: %(default)s)")
    _encoder_args(f)

    t = sub.add_parser("train-decoder", help="train the merge decoder on cached features")
    t.add_argument("--encoder", required=True, choices=encoders)
    t.add_argument("--weights", help="encoder weights (default: the encoder's)")
    t.add_argument("--dataset", default=DEFAULT_FLICKR, help="Flickr folder, parquet folder or Hub id (default: %(default)s)")
    t.add_argument("--cache", default="cache", help="feature cache folder (default: %(default)s)")
    t.add_argument("--out", required=True, help="run folder for checkpoints")
    t.add_argument("--ood-dev", nargs="*", default=[DEFAULT_COCO], help="COCO-format dev folders: with --text, their "
                   "photos' captions never train (default: %(default)s)")
    _encoder_args(t)
    _decoder_args(t)

    pt = sub.add_parser("pretrain-text", help="train the merge decoder's language side on caption text without "
                        "photos (a start for build --init-from)")
    pt.add_argument("--corpus", default=DEFAULT_TEXT, help="caption-text folder: coco/*.json, */*.token.txt "
                    "(default: %(default)s)")
    pt.add_argument("--dataset", default=DEFAULT_FLICKR, help="Flickr8k folder: its train captions join the text, "
                    "its dev and test photos are held out by their split lists (default: %(default)s)")
    pt.add_argument("--ood-dev", nargs="*", default=[DEFAULT_COCO], help="COCO-format dev folders: their photos "
                    "held out, their captions in the dev loss (default: %(default)s)")
    pt.add_argument("--out", default=os.path.join("runs", "text-pretrain"), help="run folder (default: %(default)s)")
    add_arguments(pt.add_argument_group("decoder training"), _text_config_class(),
                  exclude=("out", "vocab_size", "feature_dim", "grid_cells", "kind", "blind", "init_from", "text",
                           "text_mix", "context_dim", "attention_dim", "attention_penalty", "feature_dropout",
                           "object_words", "word_detector", "word_classifier", "read_words", "word_drop",
                           "word_distractor"),
                  defaults={"min_count": 20, "epochs": 4, "patience": 1})
    pt.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")

    v = sub.add_parser("train-vit", help="train the custom ViT on CIFAR-10")
    add_arguments(v.add_argument_group("training"), ViTTrainConfig)
    add_arguments(v.add_argument_group("architecture"), ViTCustomConfig, exclude=("weights", "batch_size"))
    v.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")

    e = sub.add_parser("evaluate", help="caption a split with a bundle and score it")
    e.add_argument("bundle", help="bundle folder")
    e.add_argument("--dataset", default=DEFAULT_FLICKR, help="(default: %(default)s)")
    e.add_argument("--split", default="test", choices=("train", "dev", "test"))
    e.add_argument("--limit", type=int, default=0, help="first N images only (0 = all)")
    e.add_argument("--cache", default="cache", help="feature cache folder (default: %(default)s)")
    e.add_argument("--no-write", action="store_true", help="print the scores without touching the bundle")
    add_decoding_arguments(e)
    _encoder_args(e)

    n = sub.add_parser("tune", help="choose the default decoding on the dev split (never test)")
    n.add_argument("bundle", help="bundle folder")
    n.add_argument("--dataset", default=DEFAULT_FLICKR, help="(default: %(default)s)")
    n.add_argument("--beam-widths", type=int, nargs="+", default=[1, 2, 3, 5, 7], help="(default: %(default)s; 1 = greedy)")
    n.add_argument("--length-penalties", type=float, nargs="+", default=[0.0, 0.5, 1.0], help="(default: %(default)s)")
    n.add_argument("--no-repeat-ngram-sizes", type=int, nargs="+", default=[0, 3],
                   help="(default: %(default)s; 0 = off)")
    n.add_argument("--metric", default="CIDEr", choices=("BLEU-4", "CIDEr", "ROUGE-L"))
    n.add_argument("--cache", default="cache", help="feature cache folder (default: %(default)s)")
    n.add_argument("--no-write", action="store_true", help="print the table without touching the bundle")
    _encoder_args(n)

    b = sub.add_parser("build", help="features -> train -> evaluate -> export a bundle")
    add_arguments(b.add_argument_group("build"), BuildConfig, exclude=("encoder_options", "default_options",
                                                                      "default_strategy"),
                  defaults={"dataset": DEFAULT_FLICKR}, required=("encoder",))
    _encoder_args(b)
    _decoder_args(b)
    # the bundle's default decoding; its caption length follows the decoder's --max-length
    add_decoding_arguments(b, strategy_default="beam")

    c = sub.add_parser("scst", help="fine-tune a bundle's decoder with self-critical sequence training")
    c.add_argument("bundle", help="bundle folder (trained with cross-entropy: python -m training build)")
    c.add_argument("--dataset", default=DEFAULT_FLICKR, help="(default: %(default)s)")
    c.add_argument("--cache", default="cache", help="feature cache folder (default: %(default)s)")
    c.add_argument("--runs", default="runs", help="run folders: <runs>/<bundle>-scst (default: %(default)s)")
    c.add_argument("--to", dest="target", help="write the bundle here (default: replace the bundle in place; its "
                   "cross-entropy scores stay in the manifest)")
    add_arguments(c.add_argument_group("SCST"), SCSTConfig)
    c.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    _encoder_args(c)

    r = sub.add_parser("references", help="build the reference index the app ships (references/flickr8k.*)")
    r.add_argument("--dataset", default=DEFAULT_FLICKR, help="Flickr folder (default: %(default)s)")
    r.add_argument("--out", default=os.path.join("references", "flickr8k"),
                   help="file prefix: writes PREFIX.json and PREFIX.npz (default: %(default)s)")

    w = sub.add_parser("wordmap", help="ImageNet classes -> caption words, from WordNet 3.0")
    w.add_argument("--wordnet", default="/usr/share/wordnet", help="WordNet 3.0 database folder (Debian's "
                   "wordnet-base; default: %(default)s)")
    w.add_argument("--synsets", default=None, help="the ImageNet-1k synset ids in class order: a .txt, a timm "
                   "wheel, or (default) the installed timm package's data file (pip install --no-deps timm)")
    w.add_argument("--vocabulary", default=os.path.join("weights", "efficientnet_lite0-flickr8k", "vocab.json"),
                   help="vocabulary whose chosen words and unmapped classes are recorded (default: %(default)s)")
    w.add_argument("--out", default=os.path.join("caption_core", "data", "imagenet_words.json"),
                   help="(default: %(default)s)")

    from .guide import GuideConfig

    gd = sub.add_parser("guide", help="measure guided decoding; --set-default makes it a bundle's default "
                                      "where the held-out measurements support it")
    gd.add_argument("bundles", nargs="+", help="bundle folders")
    gd.add_argument("--dataset", default=DEFAULT_FLICKR, help="Flickr folder (default: %(default)s)")
    gd.add_argument("--cifar", default=os.path.join("..", "shared", "data", "cifar10"),
                    help="CIFAR-10 ImageFolder (default: %(default)s)")
    gd.add_argument("--cache", default="cache", help="feature cache folder (default: %(default)s)")
    gd.add_argument("--report", default=os.path.join("benchmarks", "guidance.json"),
                    help="JSON report of every bundle (default: %(default)s)")
    gd.add_argument("--set-default", action="store_true", help="make guided decoding the default of each bundle "
                    "whose dev measurements support it (recorded in its manifest)")
    add_arguments(gd, GuideConfig)

    from .choose import ChooseConfig

    co = sub.add_parser("coco", help="caption a COCO-format folder (an out-of-domain dev set) and score it")
    co.add_argument("bundles", nargs="+", help="bundle folders")
    co.add_argument("--coco", default=DEFAULT_COCO, help="COCO-format folder: images/, captions.json, "
                    "optionally instances.json (default: %(default)s)")
    co.add_argument("--cache", default="cache", help="feature cache folder (default: %(default)s)")
    co.add_argument("--meteor", action="store_true", help="also METEOR (slower)")
    co.add_argument("--captions", help="write every caption with its references and main object to this JSON file")
    add_decoding_arguments(co)
    _encoder_args(co)

    ch = sub.add_parser("choose", help="choose the default decoding on Flickr8k dev and an out-of-domain dev set "
                                       "together (never a test split); --write records it and scores test")
    ch.add_argument("bundles", nargs="+", help="bundle folders")
    ch.add_argument("--dataset", default=DEFAULT_FLICKR, help="Flickr folder (default: %(default)s)")
    ch.add_argument("--coco", default=DEFAULT_COCO, help="COCO-format folder (default: %(default)s)")
    ch.add_argument("--cache", default="cache", help="feature cache folder (default: %(default)s)")
    ch.add_argument("--report", default=os.path.join("benchmarks", "choice.json"),
                    help="JSON report of every bundle (default: %(default)s)")
    ch.add_argument("--write", action="store_true", help="make the chosen decoding each bundle's default and score "
                    "the Flickr8k test split with it (recorded in its manifest and card)")
    add_arguments(ch, ChooseConfig)

    k = sub.add_parser("card", help="rewrite a bundle's model card from its manifest")
    k.add_argument("bundles", nargs="+", help="bundle folders")

    en = sub.add_parser("ensemble", help="serve several bundles as one: their decoders' next-word probabilities "
                        "averaged at every step (over the union of their vocabularies where they differ)")
    en.add_argument("bundles", nargs="+", help="member bundle folders")
    en.add_argument("--name", required=True, help="the ensemble bundle's name (written to <out>/<name>)")
    en.add_argument("--out", default="weights", help="(default: %(default)s)")
    en.add_argument("--dataset", default=DEFAULT_FLICKR, help="scored on its test split (default: %(default)s)")
    en.add_argument("--cache", default="cache", help="feature cache folder (default: %(default)s)")
    en.add_argument("--weights", nargs="+", type=float, metavar="W",
                    help="each member's weight in the mean, in the members' order (default: equal)")
    en.add_argument("--scene-share", type=float, default=0.0,
                    help="on an unfamiliar scene (the detector finds things, none that the members' training captions "
                         "name often), the members that read object words write from the words alone and weigh this "
                         "part of the mean (default: %(default)s, off)")
    en.add_argument("--familiar-min-share", type=float, default=0.01,
                    help="an object word (the detector's category, the classifier's word) is familiar when at least "
                         "this share of the dataset's train captions name it (default: %(default)s)")

    from .probe import PROBED, ProbeConfig

    pr = sub.add_parser("probe", help="linear probes on one CIFAR-10 subset: each encoder, pretrained and "
                        "randomly initialised")
    pr.add_argument("encoders", nargs="*", default=list(PROBED), help=f"(default: all: {' '.join(PROBED)})")
    pr.add_argument("--report", default=os.path.join("benchmarks", "probes.json"), help="(default: %(default)s)")
    add_arguments(pr, ProbeConfig)

    fp = sub.add_parser("fingerprint", help="record the tensor fingerprint of each bundle's encoder weights in its "
                        "manifest (bundles made before fingerprints); refuses a bundle that has a different one")
    fp.add_argument("bundles", nargs="+", help="bundle folders")

    cp = sub.add_parser("compact", help="store bundles' decoders as float16 and refer to ensembles' members by name")
    cp.add_argument("bundles", nargs="+", help="bundle folders (members are compacted before their ensembles)")

    dt = sub.add_parser("detector", help="the COCO detector on a COCO-format dev set: main object found, speed")
    dt.add_argument("--coco", default=DEFAULT_COCO, help="COCO-format folder with instances.json (default: %(default)s)")
    dt.add_argument("--bundle", help="time the detector beside this bundle's encoder (default: the best bundle)")
    dt.add_argument("--repeats", type=int, default=3, help="timing rounds over the photos (default: %(default)s)")
    dt.add_argument("--report", default=os.path.join("benchmarks", "detector.json"),
                    help="JSON report, read by the page's Encoders tab (default: %(default)s)")

    tb = sub.add_parser("table", help="the bundles' headline figures as a Markdown table (the README's)")
    tb.add_argument("--weights", default="weights", help="(default: %(default)s)")
    tb.add_argument("--write", metavar="README", help="replace the table between README's <!-- bundles --> markers")

    u = sub.add_parser("push", help="upload a bundle to the Hugging Face Hub")
    u.add_argument("bundle")
    u.add_argument("repo", help="owner/name of a model repository")
    u.add_argument("--private", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from caption_core.bundle import BundleError
    from caption_core.hub import OfflineError

    from .datasets import DatasetError

    try:
        return COMMANDS[args.command](args)
    except (DatasetError, BundleError, OfflineError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def cmd_features(args) -> int:
    from .build import encoder_for, load_splits
    from .features import cache_dir, extract_features

    splits = load_splits(args.dataset, [s.strip() for s in args.splits.split(",") if s.strip()])
    encoder = encoder_for(args.encoder, args.weights, dict(args.encoder_options))
    print(f"writing features to {cache_dir(args.cache, encoder, args.dataset)}", flush=True)
    for split, examples in splits.items():
        feats, valid = extract_features(encoder, examples, args.dataset, split, args.cache, engine=args.engine,
                                        workers=args.workers)
        print(f"{split}: {feats.shape[0]} x {feats.shape[1]} features, {int((~valid).sum())} unreadable", flush=True)
    return 0


def cmd_train_decoder(args) -> int:
    from .build import encoder_for, load_splits
    from .features import extract_features
    from .train_decoder import train_decoder

    splits = load_splits(args.dataset, ["train", "dev"])
    encoder = encoder_for(args.encoder, args.weights, dict(args.encoder_options))
    feats = {s: extract_features(encoder, ex, args.dataset, s, args.cache) for s, ex in splits.items()}
    cfg = _decoder_config(args, args.out)
    text = None
    if cfg.text_mix > 0:
        from .pretrain_text import training_text

        text, _ = training_text(cfg.text, args.dataset, tuple(args.ood_dev))
    print(f"training into {args.out}", flush=True)
    state = train_decoder(cfg, splits["train"], *feats["train"], splits["dev"], *feats["dev"],
                          resume=not args.no_resume, text_captions=text)
    print(f"best epoch {state['best_epoch']} (dev loss {state['best_dev_loss']:.4f}); weights: {args.out}/best.keras")
    return 0


def cmd_pretrain_text(args) -> int:
    from .pretrain_text import pretrain_text
    from .train_decoder import DecoderTrainConfig

    cfg = from_arguments(DecoderTrainConfig, args, out=args.out)
    state = pretrain_text(cfg, args.corpus, args.dataset, tuple(args.ood_dev), resume=not args.no_resume)
    print(f"best epoch {state['best_epoch']} (dev loss {state['best_dev_loss']:.4f}); start a photo run from it: "
          f"python -m training build --encoder E --init-from {args.out} --text {args.corpus} --text-mix 1")
    return 0


def cmd_train_vit(args) -> int:
    from caption_core.encoders.vit_custom import ViTCustomConfig

    from .train_vit import ViTTrainConfig, train_vit

    cfg = from_arguments(ViTTrainConfig, args)
    print(f"training vit_custom on {cfg.data} into {cfg.out}", flush=True)
    train_vit(cfg, from_arguments(ViTCustomConfig, args), resume=args.resume)
    return 0


def cmd_evaluate(args) -> int:
    import json

    from caption_core.bundle import update_manifest
    from caption_core.captioner import Captioner
    from caption_core.decoding import decoding_arguments

    from .build import dataset_name, load_splits
    from .evaluate import captions_file, evaluate_split, metrics_key, write_captions
    from .features import extract_features

    captioner = Captioner.from_bundle(args.bundle, dict(args.encoder_options))
    strategy, given = decoding_arguments(args)
    strategy_obj, options = captioner.decoding(strategy, None, **given)  # the bundle's default, flags on top
    strategy, opts = strategy_obj.name, options.to_dict()
    examples = load_splits(args.dataset, [args.split])[args.split]
    if args.limit:
        examples = examples[: args.limit]
    feats, valid = extract_features(captioner.encoder, examples, args.dataset, args.split, args.cache)
    scores, captions = evaluate_split(captioner, examples, feats, valid, strategy, cache=args.cache, **opts)
    scores["options"] = opts
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in scores.items()}))
    if not args.no_write:
        key = metrics_key(dataset_name(args.dataset), args.split, captioner.encoder.precision, args.limit)
        metrics = dict(captioner.manifest.get("metrics", {}))
        metrics.setdefault(key, {})[strategy] = scores
        fname = captions_file(args.split, strategy, captioner.encoder.precision)
        write_captions(os.path.join(args.bundle, fname), captioner.name, key, strategy, opts, captions)
        update_manifest(args.bundle, {"metrics": metrics}, add_files=[fname])
        from .build import refresh_card

        refresh_card(args.bundle)
        print(f"scores written to {args.bundle}/manifest.json, captions to {args.bundle}/{fname}")
    return 0


def cmd_tune(args) -> int:
    from caption_core.bundle import update_manifest
    from caption_core.captioner import Captioner

    from .build import load_splits
    from .evaluate import evaluate_split
    from .features import extract_features

    captioner = Captioner.from_bundle(args.bundle, dict(args.encoder_options))
    examples = load_splits(args.dataset, ["dev"])["dev"]
    feats, valid = extract_features(captioner.encoder, examples, args.dataset, "dev", args.cache)
    rows = []
    for no_repeat in args.no_repeat_ngram_sizes:
        for width in args.beam_widths:
            for alpha in (args.length_penalties if width > 1 else [0.0]):
                strategy = "beam" if width > 1 else "greedy"
                opts = {"beam_width": width, "length_penalty": alpha} if strategy == "beam" else {}
                opts["no_repeat_ngram_size"] = no_repeat  # explicit: never inherited from the bundle's default
                scores, _ = evaluate_split(captioner, examples, feats, valid, strategy, meteor=False,
                                           cache=args.cache, **opts)
                stats = scores["caption_statistics"]
                rows.append({"strategy": strategy, "options": opts,
                             **{k: round(scores[k], 4) for k in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr")},
                             **{k: stats[k] for k in ("distinct_share", "words_used", "dangling_endings")}})
                print(f"{strategy:6s} width {width} alpha {alpha:.1f} no-repeat {no_repeat}: "
                      + ", ".join(f"{k} {scores[k]:.4f}" for k in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"))
                      + f", distinct {stats['distinct_share']:.0%}, dangling {stats['dangling_endings']}", flush=True)
    # captions cut mid-phrase ("... with a") are never the default where some decoding avoids them all; on a
    # tie, n-gram blocking is preferred: it changes nothing on dev then, and stops loops that dev did not show
    clean = [r for r in rows if r["dangling_endings"] == 0] or rows
    best = max(clean, key=lambda r: (r[args.metric], bool(r["options"].get("no_repeat_ngram_size"))))
    print(f"best on dev by {args.metric}: {best['strategy']} {best['options']}")
    if not args.no_write:
        update_manifest(args.bundle, {"default_decoding": {"strategy": best["strategy"], "options": best["options"]},
                                      "tuning": {"split": "dev", "metric": args.metric, "results": rows}})
        from .build import refresh_card

        refresh_card(args.bundle)
        print(f"default decoding written to {args.bundle}/manifest.json")
    return 0


def cmd_build(args) -> int:
    from caption_core.decoding import decoding_arguments

    from .build import BuildConfig, build

    strategy, given = decoding_arguments(args)
    cfg = from_arguments(BuildConfig, args, encoder_options=dict(args.encoder_options), default_strategy=strategy,
                         default_options=given)
    build(cfg, _decoder_config(args, ""), resume=not args.no_resume)
    return 0


def cmd_scst(args) -> int:
    from .scst import SCSTConfig, scst_bundle

    result = scst_bundle(args.bundle, from_arguments(SCSTConfig, args), args.dataset, args.cache, args.runs,
                         args.target, resume=not args.no_resume, encoder_options=dict(args.encoder_options))
    return 0 if result["exported"] else 3


def cmd_references(args) -> int:
    import time

    from caption_core.references import ReferenceIndex

    from .common import command_line, git_commit

    t0 = time.perf_counter()
    index = ReferenceIndex.build(args.dataset, made={"command": command_line(), "git_commit": git_commit()})
    index.made["seconds"] = round(time.perf_counter() - t0, 1)
    files = index.save(args.out)
    sizes = ", ".join(f"{os.path.basename(f)} {os.path.getsize(f) / 1e6:.2f} MB" for f in files)
    print(f"reference index: {len(index)} photos {index.made['splits']} in {index.made['seconds']} s -> {sizes}")
    return 0


def cmd_wordmap(args) -> int:
    from .common import command_line
    from .wordmap import write_word_map

    doc = write_word_map(args.out, args.wordnet, args.synsets, args.vocabulary, command=command_line())
    from caption_core.guidance import GUIDED_GROUPS

    grouped = sum(1 for c in doc["classes"] if c["group"])
    guided = sum(1 for c in doc["classes"] if c["group"] in GUIDED_GROUPS)
    print(f"word map: 1000 classes ({grouped} in a group, {guided} in a guided one), {doc['unmapped']['count']} map to no word of "
          f"{args.vocabulary} -> {args.out}")
    return 0


def cmd_guide(args) -> int:
    import json

    from .common import machine
    from .guide import GuideConfig, guide_bundle

    cfg = from_arguments(GuideConfig, args)
    reports = [guide_bundle(b, cfg, args.dataset, args.cifar, args.cache, args.set_default) for b in args.bundles]
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump({"machine": machine(), "bundles": reports}, f, indent=1)
        print(f"report: {args.report}")
    return 0


def cmd_coco(args) -> int:
    import json

    from caption_core.bundle import read_manifest
    from caption_core.captioner import Captioner
    from caption_core.decoding import decoding_arguments
    from caption_core.encoders import supported_options

    from .coco import coco_features, load_coco, score_coco, vocabulary_gaps
    from .detections import coco_objects
    from .guide import decode_captions

    photos = load_coco(args.coco)
    strategy, given = decoding_arguments(args)
    captions = {}
    for folder in args.bundles:
        # float32 unless told otherwise, as `choose` measures: a dev set's figures should not depend on the CPU
        float32 = supported_options(read_manifest(folder)["encoder"]["name"], {"precision": "float32"}) or {}
        captioner = Captioner.from_bundle(folder, {**float32, **dict(args.encoder_options)})
        s, opts = captioner.decoding(strategy, None, **given)  # the bundle's default, flags on top
        feats, probs, ids = coco_features(captioner, photos, args.cache)
        objects = coco_objects(captioner.detector, photos, ids, args.cache) if captioner.detector else None
        texts, _ = decode_captions(captioner, feats, probs, s.name, opts.to_dict(), objects=objects)
        scores = score_coco(photos, ids, texts, meteor=args.meteor)
        scores["unnamed_main_objects"] = vocabulary_gaps(captioner, photos)
        print(json.dumps({"bundle": captioner.name, "strategy": s.name, "options": opts.to_dict(), **scores}))
        by_id = {p.image_id: p for p in photos}
        captions[captioner.name] = {i: {"caption": t, "main_object": by_id[i].main_object,
                                        "references": list(by_id[i].captions)} for i, t in zip(ids, texts)}
    if args.captions:
        from .common import write_json

        write_json(args.captions, captions)
        print(f"captions: {args.captions}")
    return 0


def cmd_choose(args) -> int:
    import json

    from .choose import ChooseConfig, choose_default
    from .common import machine

    cfg = from_arguments(ChooseConfig, args)
    reports = [choose_default(b, cfg, args.dataset, args.coco, args.cache, args.write) for b in args.bundles]
    if args.report:
        from .common import write_json

        write_json(args.report, {"machine": machine(), "bundles": reports})
        print(f"report: {args.report}")
    return 0


def cmd_card(args) -> int:
    from .build import refresh_card

    for folder in args.bundles:
        refresh_card(folder)
        print(f"model card written: {folder}/README.md")
    return 0


def cmd_ensemble(args) -> int:
    from .ensemble import build_ensemble

    build_ensemble(args.bundles, args.name, args.dataset, args.out, args.cache, weights=args.weights,
                   scene_share=args.scene_share, familiar_min_share=args.familiar_min_share)
    return 0


def cmd_probe(args) -> int:
    from .probe import ProbeConfig, probe

    probe(from_arguments(ProbeConfig, args), args.encoders, args.report)
    print(f"report: {args.report}")
    return 0


def cmd_fingerprint(args) -> int:
    from caption_core.bundle import load_bundle, update_manifest

    for folder in args.bundles:
        manifest, encoder, *_ = load_bundle(folder)  # a recorded fingerprint that differs is refused here
        found = encoder.weights_fingerprint()
        if manifest["encoder"].get("weights_fingerprint") != found:
            update_manifest(folder, {"encoder": {**manifest["encoder"], "weights_fingerprint": found}})
        print(f"{folder}: {encoder.name} weights {found} ({encoder.weights_source()})")
    return 0


def cmd_compact(args) -> int:
    from .compact import compact

    compact(args.bundles)
    return 0


def cmd_detector(args) -> int:
    from .detector_eval import measure_detector

    measure_detector(args.coco, args.bundle, args.repeats, args.report)
    return 0


BUNDLES_BEGIN, BUNDLES_END = "<!-- bundles: python -m training table --write README.md -->", "<!-- /bundles -->"


def cmd_table(args) -> int:
    from caption_core.formatting import bundles_table

    table = bundles_table(args.weights)
    if not args.write:
        print(table)
        return 0
    with open(args.write, encoding="utf-8") as f:
        text = f.read()
    if BUNDLES_BEGIN not in text or BUNDLES_END not in text:
        raise ValueError(f"{args.write} has no {BUNDLES_BEGIN} ... {BUNDLES_END} markers to write the table between")
    head, rest = text.split(BUNDLES_BEGIN, 1)
    with open(args.write, "w", encoding="utf-8") as f:
        f.write(head + BUNDLES_BEGIN + "\n" + table + "\n" + BUNDLES_END + rest.split(BUNDLES_END, 1)[1])
    print(f"table written into {args.write}")
    return 0


def cmd_push(args) -> int:
    from .push import push_bundle

    url = push_bundle(args.bundle, args.repo, private=args.private)
    print(f"pushed {args.bundle} to {url}")
    return 0


COMMANDS = {"features": cmd_features, "train-decoder": cmd_train_decoder, "train-vit": cmd_train_vit,
            "evaluate": cmd_evaluate, "tune": cmd_tune, "build": cmd_build, "scst": cmd_scst,
            "pretrain-text": cmd_pretrain_text,
            "references": cmd_references, "wordmap": cmd_wordmap, "guide": cmd_guide, "coco": cmd_coco,
            "choose": cmd_choose, "card": cmd_card,
            "ensemble": cmd_ensemble, "probe": cmd_probe, "fingerprint": cmd_fingerprint, "compact": cmd_compact,
            "detector": cmd_detector, "table": cmd_table, "push": cmd_push}

if __name__ == "__main__":
    sys.exit(main())
