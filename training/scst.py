"""Self-critical sequence training (Rennie et al. 2017) of a bundle's decoder, on cached features.

After cross-entropy training, the decoder is fine-tuned with the policy gradient of CIDEr-D:
for each training photo, ``samples`` captions are drawn from the model; each one's reward is its
CIDEr-D against the photo's references (document frequencies from the train references), and its
baseline the mean reward of the photo's other samples (Luo 2020, "A better variant of self-critical
sequence training") or the reward of the greedy caption (Rennie et al.). The loss is
``sum(advantage * -log p(sampled word)) / words``: captions better than their baseline are made
more likely, worse ones less.

Known failure modes, and the guards here:
- captions cut mid-phrase ("a dog runs with a"): the reward counts ``<end>`` as a word of the
  caption and of every reference (as self-critical.pytorch does), so a caption that stops early
  loses its final n-grams;
- collapse onto a few generic captions: ``xe_weight`` adds the cross-entropy of a reference caption of
  each photo to the loss (the mixed objective of Paulus et al. 2017), and an epoch is only chosen if its
  dev captions stay distinct
  (``min_distinct``) and none end on a dangling word (``max_dangling``); the cross-entropy model is
  epoch 0 and stays the choice when no SCST epoch beats it on dev CIDEr.

Sampling runs on the NumPy decoder (re-exported from the Keras weights before each batch: on-policy),
the gradient through the Keras model. Epochs are checkpointed (weights + optimizer) and resume as
cross-entropy training does; early stopping and the choice of epoch use the dev split only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

import numpy as np

from caption_core.config import Config
from caption_core.decoders import KerasDecoder, load_decoder, make_decoder, masked_loss, pad_captions
from caption_core.decoding import decode
from caption_core.metrics import CiderD
from caption_core.text import END, END_ID, START_ID, clean_caption

from .common import check_resume, read_json, save_keras_atomic, set_seeds, write_json
from .train_decoder import caption_rows, load_checkpoint, save_checkpoint

log = logging.getLogger("training.scst")
BASELINES = ("mean", "greedy")


@dataclasses.dataclass(frozen=True)
class SCSTConfig(Config):
    out: str = ""  # run folder: checkpoints, state and the dev curve (default: <runs>/<bundle name>-scst)
    epochs: int = 10  # most epochs over the train split
    learning_rate: float = 5e-5  # Adam; small, as the cross-entropy model is the starting point
    samples: int = 5  # captions sampled per photo and epoch
    baseline: str = "mean"  # 'mean': the mean reward of the photo's other samples; 'greedy': its greedy caption's
    batch_images: int = 50  # photos per gradient step (batch_images x samples captions)
    temperature: float = 1.0  # sampling temperature (1 = the model's own distribution: on-policy)
    clipnorm: float = 5.0  # gradient clipping (global norm per variable)
    patience: int = 2  # stop after this many epochs without a better dev CIDEr (any epoch's, eligible or not)
    min_distinct: float = 0.7  # never choose an epoch whose dev captions are less distinct than this share (or than
    # the cross-entropy model's, where that is lower: a weak encoder's SCST may not cost diversity either)
    max_dangling: int = 0  # never choose an epoch with more dev captions ending on 'with a', 'of the', ...
    end_token: bool = True  # reward <end> as a word of the caption (discourages captions cut mid-phrase)
    xe_weight: float = 0.2  # plus this times the cross-entropy of one reference caption per photo (0: pure SCST; without it the dev captions collapsed to 59% distinct in 2 epochs)
    dev_limit: int = 0  # score the first N dev photos each epoch (0 = all)
    seed: int = 0  # seeds the photo order and the samples (a resumed run draws the same)
    jit_compile: bool = False  # XLA for the gradient step (slower for the LSTM on CPU)

    def __post_init__(self):
        if self.baseline not in BASELINES:
            raise ValueError(f"unknown baseline {self.baseline!r}; valid: {list(BASELINES)}")
        if self.baseline == "mean" and self.samples < 2:
            raise ValueError("baseline 'mean' needs samples >= 2 (each sample's baseline is the others' mean)")


class Rewards:
    """CIDEr-D of generated id sequences against each photo's references, reference vectors prepared once."""

    def __init__(self, references: list[list[str]], vocab, end_token: bool = True):
        tail = [END] if end_token else []
        tokenize = lambda caption: clean_caption(caption).split() + tail  # noqa: E731
        self.tail, self.words = tail, vocab.id_to_word
        self.cider = CiderD(references, tokenize=tokenize)  # document frequencies of these references
        self.refs = [[self.cider.vector(tokenize(r)) for r in refs] for refs in references]

    def __call__(self, photo: int, tokens: list[int]) -> float:
        words = [self.words[t] for t in tokens if t != END_ID] + self.tail
        return self.cider.similarity(self.cider.vector(words), self.refs[photo])


def advantages(rewards: np.ndarray, samples: int, greedy: np.ndarray | None = None) -> np.ndarray:
    """rewards (B * samples,), photo-major -> reward minus baseline: the mean of the photo's other
    samples, or ``greedy`` (B,), the photo's greedy reward."""
    r = rewards.reshape(-1, samples)  # (B, K)
    if greedy is not None:
        return (r - greedy[:, None]).ravel()
    others = (r.sum(axis=1, keepdims=True) - r) / (samples - 1)  # (B, K): mean of the other K - 1
    return (r - others).ravel()


class SCSTTrainer:
    def __init__(self, cfg: SCSTConfig, decoder: KerasDecoder):
        import keras
        import tensorflow as tf

        self.cfg, self.decoder = cfg, decoder
        model = self.model = decoder.training_model
        optimizer = self.optimizer = keras.optimizers.Adam(cfg.learning_rate, clipnorm=cfg.clipnorm)
        optimizer.build(model.trainable_variables)
        D = decoder.config.input_dim  # the features, then the object words of a decoder that reads them
        spec = [tf.TensorSpec([None, D], tf.float32), tf.TensorSpec([None, None], tf.int32),
                tf.TensorSpec([None], tf.float32), tf.TensorSpec([None, D], tf.float32),
                tf.TensorSpec([None, None], tf.int32)]
        xe_weight = cfg.xe_weight

        @tf.function(input_signature=spec, jit_compile=cfg.jit_compile)
        def train_step(feats, caps, adv, ref_feats, refs):
            x, y = caps[:, :-1], caps[:, 1:]  # (N, T-1): <start> + sample, sample + padding
            with tf.GradientTape() as tape:
                logits = model({"features": feats, "tokens": x}, training=False)  # (N, T-1, V): the sampled policy
                nll = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)  # (N, T-1)
                mask = tf.cast(y != 0, nll.dtype)
                loss = tf.reduce_sum(nll * mask * adv[:, None]) / tf.maximum(tf.reduce_sum(mask), 1.0)
                if xe_weight:  # mixed objective (Paulus et al. 2017): teacher forcing on a reference per photo
                    ref_logits = model({"features": ref_feats, "tokens": refs[:, :-1]}, training=False)  # (B, R-1, V)
                    loss += xe_weight * masked_loss(refs[:, 1:], ref_logits)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        self.train_step = train_step

    def sample(self, feats: np.ndarray, seed: int) -> list[list[int]]:
        """feats (B, D) -> B * samples id sequences (photo-major), drawn from the current weights."""
        self.decoder.refresh()
        cfg = self.cfg
        hyps = decode(self.decoder.step, self.decoder.initial_state(feats), len(feats), "sample",
                      num_return=cfg.samples, temperature=cfg.temperature, seed=seed,
                      max_length=self.decoder.config.max_length - 1)
        return [h.tokens for per in hyps for h in per]

    def greedy(self, feats: np.ndarray) -> list[list[int]]:
        hyps = decode(self.decoder.step, self.decoder.initial_state(feats), len(feats), "greedy",
                      max_length=self.decoder.config.max_length - 1)
        return [per[0].tokens for per in hyps]

    def run_epoch(self, feats: np.ndarray, photos: np.ndarray, rewards: Rewards, rng,
                  references: list[np.ndarray] | None = None) -> dict:
        """One pass over ``photos`` (rows of ``feats``) -> mean reward, loss and timings. ``references``:
        each photo's reference captions as padded ids (R, L), for the cross-entropy term."""
        cfg, K = self.cfg, self.cfg.samples
        order = rng.permutation(photos)
        t0 = time.perf_counter()
        totals = {"reward": 0.0, "loss": 0.0, "sample_s": 0.0, "reward_s": 0.0, "step_s": 0.0}
        steps = 0
        for b in range(0, len(order), cfg.batch_images):
            batch = order[b:b + cfg.batch_images]
            f = feats[batch]  # (B, D)
            t = time.perf_counter()
            seqs = self.sample(f, int(rng.integers(2**31 - 1)))
            greedy = self.greedy(f) if cfg.baseline == "greedy" else None
            t1 = time.perf_counter()
            photo_of = np.repeat(batch, K)  # (B * K,)
            r = np.array([rewards(p, s) for p, s in zip(photo_of, seqs)], np.float32)  # (B * K,)
            g = None if greedy is None else np.array([rewards(p, s) for p, s in zip(batch, greedy)], np.float32)
            adv = advantages(r, K, g)
            t2 = time.perf_counter()
            caps = pad_captions([[START_ID, *s] for s in seqs], self.decoder.config.max_length + 1)  # (B * K, L)
            if cfg.xe_weight and references is not None:
                picked = [references[p][rng.integers(len(references[p]))] for p in batch]
                refs = pad_captions([r[r != 0].tolist() for r in picked], self.decoder.config.max_length)  # (B, R)
            else:
                refs = np.zeros((len(batch), 2), np.int32)
            loss = float(self.train_step(np.repeat(f, K, axis=0), caps, adv.astype(np.float32), f, refs))
            t3 = time.perf_counter()
            totals["reward"] += float(r.mean())
            totals["loss"] += loss
            totals["sample_s"] += t1 - t
            totals["reward_s"] += t2 - t1
            totals["step_s"] += t3 - t2
            steps += 1
        self.decoder.refresh()
        return {"reward": totals["reward"] / max(steps, 1), "loss": totals["loss"] / max(steps, 1),
                "seconds": time.perf_counter() - t0,
                **{k: round(v, 1) for k, v in totals.items() if k.endswith("_s")}}


def dev_scores(captioner, examples, feats: np.ndarray, valid: np.ndarray, limit: int = 0, cache: str = "cache") -> dict:
    """The bundle's default decoding on the dev split: pycocoevalcap BLEU-4 / CIDEr and caption statistics."""
    from .evaluate import evaluate_split

    if limit:
        examples, feats, valid = examples[:limit], feats[:limit], valid[:limit]
    strategy, opts = captioner.decoding()
    if strategy.guided:  # guidance is chosen after training (python -m training guide) and needs the photos where
        strategy, opts = captioner.decoding("beam")  # the encoder has no classifier: select on its beam search
    scores, _ = evaluate_split(captioner, examples, feats, valid, strategy.name, meteor=False, cache=cache,
                               **opts.to_dict())
    stats = scores["caption_statistics"]
    return {"BLEU-4": round(scores["BLEU-4"], 4), "CIDEr": round(scores["CIDEr"], 4),
            **{k: stats[k] for k in ("distinct_share", "words_used", "dangling_endings")}}


def eligible(cfg: SCSTConfig, row: dict, start: dict | None = None) -> bool:
    """Whether an epoch's dev captions may be chosen: as distinct as ``min_distinct``, or, where the cross-entropy
    model (``start``) was already less distinct than that, at least as distinct as it (SCST may not cost
    diversity); and no more dangling endings than ``max_dangling``."""
    floor = cfg.min_distinct if start is None else min(cfg.min_distinct, start["distinct_share"])
    return row["distinct_share"] >= floor and row["dangling_endings"] <= cfg.max_dangling


def record_epoch(cfg: SCSTConfig, state: dict, epoch: int, dev: dict) -> tuple[bool, bool]:
    """An epoch's dev scores into the run's ``state`` -> (chosen now, eligible). The chosen epoch is the eligible one
    with the best dev CIDEr. Patience counts the epochs that bring neither a new chosen epoch nor a better dev CIDEr
    than any epoch before, eligible or not: a run whose captions still improve but are not eligible yet (a dangling
    ending the cross-entropy model already had) goes on until they are, rather than stopping at ``patience``."""
    ok = eligible(cfg, dev, state["history"][0])
    improved = ok and (state["best_dev_cider"] is None or dev["CIDEr"] > state["best_dev_cider"])
    seen = max(row["CIDEr"] for row in state["history"])  # the best of the curve so far, eligible or not
    if improved:
        state.update(best_epoch=epoch, best_dev_cider=dev["CIDEr"])
    if improved or dev["CIDEr"] > seen:
        state["bad_epochs"] = 0
    else:
        state["bad_epochs"] += 1
    if state["bad_epochs"] >= cfg.patience:
        state["stopped"] = f"early stopping: no better dev CIDEr for {cfg.patience} epochs"
    return improved, ok


def train_scst(cfg: SCSTConfig, captioner, decoder: KerasDecoder, train_examples, train_feats, train_valid,
               dev_examples, dev_feats, dev_valid, resume: bool = True, stop_after_epochs: int | None = None,
               cache: str = "cache") -> dict:
    """Fine-tune ``decoder`` (the Keras form of ``captioner``'s decoder) and return the state: the dev
    curve (epoch 0 = the starting model), the chosen epoch, timings. The chosen weights are in
    ``<out>/best.keras`` and loaded into ``decoder`` on return. A decoder that reads object words samples from the
    training photos' (their detections cached under ``cache``)."""
    os.makedirs(cfg.out, exist_ok=True)
    state_path = os.path.join(cfg.out, "state.json")
    ckpt, best_path = os.path.join(cfg.out, "last.keras"), os.path.join(cfg.out, "best.keras")
    state = read_json(state_path) if resume else None
    state = check_resume(state, cfg, log)  # only --epochs may change: the run extended (or cut)
    set_seeds(cfg.seed)
    captioner.decoder = decoder  # decode with the weights being trained
    trainer = SCSTTrainer(cfg, decoder)
    photos = np.flatnonzero(np.asarray(train_valid))
    t0 = time.perf_counter()
    rewards = Rewards([list(e.captions) for e in train_examples], captioner.vocab, cfg.end_token)
    reward_setup = time.perf_counter() - t0
    ref_idx, ref_caps = caption_rows(train_examples, train_valid, captioner.vocab, decoder.config.max_length)
    order = np.argsort(ref_idx, kind="stable")
    cuts = np.searchsorted(ref_idx[order], np.arange(len(train_examples) + 1))
    references = [ref_caps[order[a:b]] for a, b in zip(cuts[:-1], cuts[1:])]  # per photo (R, L) ids
    train_feats = np.asarray(train_feats, np.float32)
    dev_feats = np.asarray(dev_feats, np.float32)
    if captioner.object_words is not None:  # what the decoder reads: the features, then each photo's object words
        from .evaluate import photo_signals

        words = np.zeros((len(train_feats), captioner.object_words.size), np.float32)  # (N, W)
        words[photos] = captioner.object_words.photo_vectors(
            *photo_signals(captioner, [train_examples[p] for p in photos], train_feats[photos], cache), len(photos))
        train_feats = np.concatenate([train_feats, words], axis=1)  # (N, D + W)
    if state is not None and os.path.exists(ckpt):
        load_checkpoint(trainer.model, trainer.optimizer, ckpt)
        decoder.refresh()
        log.info("resuming after epoch %d", state["epochs_done"])
    else:
        start = dev_scores(captioner, dev_examples, dev_feats, dev_valid, cfg.dev_limit, cache)
        state = {"config": cfg.to_dict(), "epochs_done": 0, "best_epoch": 0, "best_dev_cider": None,
                 "bad_epochs": 0, "history": [{"epoch": 0, **start}], "stopped": None,
                 "train_images": int(len(photos))}
        if eligible(cfg, start, start):
            state["best_dev_cider"] = start["CIDEr"]
        save_keras_atomic(trainer.model, best_path)  # epoch 0: the cross-entropy model
        print(f"SCST from the cross-entropy model: dev {_row(start)}", flush=True)
    print(f"SCST: {len(photos)} training photos x {cfg.samples} samples, baseline '{cfg.baseline}', "
          f"learning rate {cfg.learning_rate:g} (reward vectors prepared in {reward_setup:.1f} s)", flush=True)
    done_now = 0
    while state["epochs_done"] < cfg.epochs and state["stopped"] is None:
        epoch = state["epochs_done"] + 1
        stats = trainer.run_epoch(train_feats, photos, rewards, np.random.default_rng([cfg.seed, epoch]), references)
        dev = dev_scores(captioner, dev_examples, dev_feats, dev_valid, cfg.dev_limit, cache)
        improved, ok = record_epoch(cfg, state, epoch, dev)
        if improved:
            save_keras_atomic(trainer.model, best_path)
        state["history"].append({"epoch": epoch, **dev, "train_reward": round(stats["reward"], 4),
                                 "loss": round(stats["loss"], 5), "seconds": round(stats["seconds"], 1),
                                 **{k: v for k, v in stats.items() if k.endswith("_s")}})
        state["epochs_done"] = epoch
        save_checkpoint(trainer.model, trainer.optimizer, ckpt)
        write_json(state_path, state)
        print(f"epoch {epoch}: train reward {stats['reward']:.4f}, dev {_row(dev)}"
              f"{' *' if improved else '' if ok else ' (not eligible)'} ({stats['seconds']:.0f} s: sampling "
              f"{stats['sample_s']} s, rewards {stats['reward_s']} s, gradient {stats['step_s']} s)", flush=True)
        done_now += 1
        if stop_after_epochs is not None and done_now >= stop_after_epochs:
            break
    write_json(state_path, state)
    import keras

    best = keras.saving.load_model(best_path, compile=False, safe_mode=True)
    decoder.training_model.set_weights(best.get_weights())
    decoder.refresh()
    return state


def _row(d: dict) -> str:
    return (f"CIDEr {d['CIDEr']:.4f}, BLEU-4 {d['BLEU-4']:.4f}, distinct {d['distinct_share']:.0%}, "
            f"{d['words_used']} words, {d['dangling_endings']} dangling")


def scst_bundle(bundle: str, cfg: SCSTConfig, dataset: str, cache: str = "cache", runs: str = "runs",
                out: str | None = None, strategies=("greedy", "beam"), resume: bool = True,
                encoder_options: dict | None = None) -> dict:
    """``python -m training scst``: fine-tune a bundle's decoder with SCST and write the bundle (in place,
    or to ``out``) with both stages recorded: the cross-entropy model's test scores and caption statistics,
    the SCST run (config, command, dev curve, timings), the new test scores, and ten test photos' captions
    before and after. The bundle is left untouched when its dev-chosen SCST captions collapse."""
    from caption_core.bundle import save_bundle, update_manifest
    from caption_core.captioner import Captioner

    from .build import dataset_name, load_splits, refresh_card
    from .common import command_line, machine
    from .evaluate import score_test
    from .features import extract_features

    captioner = Captioner.from_bundle(bundle, encoder_options)
    manifest = captioner.manifest
    if manifest.get("training", {}).get("blind"):
        raise ValueError(f"bundle '{bundle}' is a language-only baseline: SCST needs image features")
    if "members" in manifest["decoder"]:
        raise ValueError(f"bundle '{bundle}' is an ensemble: run SCST on its member bundles, then assemble it again "
                         "(python -m training ensemble)")
    name = manifest["name"]
    cfg = cfg if cfg.out else dataclasses.replace(cfg, out=os.path.join(runs, f"{name}-scst"))
    done = manifest.get("training", {}).get("scst")
    extending = bool(done) and resume and os.path.normpath(done["config"]["out"]) == os.path.normpath(cfg.out) \
        and os.path.exists(os.path.join(cfg.out, "state.json"))  # its own run, extended (--epochs): it goes on
    if done and not extending:  # a second stage would replace the first's record and call the SCST model 'cross-entropy'
        raise ValueError(
            f"bundle '{bundle}' was already fine-tuned with SCST (epoch {done['best_epoch']} of "
            f"{done['epochs_run']}, run in {done['config']['out']}): to train longer, run the same command with a "
            "larger --epochs while that run's folder is there (it resumes from its last checkpoint and goes on), or "
            "start from its cross-entropy bundle")
    decoder = load_decoder(os.path.join(bundle, manifest["decoder"]["file"]), captioner.decoder.config)
    splits = load_splits(dataset)
    feats = {s: extract_features(captioner.encoder, ex, dataset, s, cache) for s, ex in splits.items()}

    def test_run(tag: str) -> tuple[dict, dict, dict]:
        return score_test(captioner, name, dataset_name(dataset), splits["test"], *feats["test"], strategies, tag,
                          cache=cache)

    captioner.decoder = decoder
    if extending:  # the bundle holds the SCST model: the cross-entropy model's scores and captions are its record's
        before = manifest["cross_entropy_metrics"]
        before_caps = {e["image_id"]: {"caption": e["cross_entropy"]} for e in done["examples"]}
    else:
        before, _, before_caps = test_run("cross-entropy")
    t0 = time.perf_counter()
    state = train_scst(cfg, captioner, decoder, splits["train"], *feats["train"], splits["dev"], *feats["dev"],
                       resume=resume, cache=cache)
    seconds = time.perf_counter() - t0
    if state["best_epoch"] == 0:
        print("SCST did not beat the cross-entropy model on dev (or its captions were not eligible): "
              f"bundle '{bundle}' left as it was; the run is in {cfg.out}", flush=True)
        return {"state": state, "exported": False}
    after, files, after_caps = test_run("SCST")
    epochs = [h for h in state["history"] if h["epoch"] > 0]
    scst = {"stage": "scst", "command": command_line(), "config": cfg.to_dict(), "best_epoch": state["best_epoch"],
            "epochs_run": state["epochs_done"], "stopped": state["stopped"], "dev_curve": state["history"],
            "train_images": state["train_images"], "seconds": round(seconds, 1),
            "epoch_seconds": [h["seconds"] for h in epochs], "machine": machine(),
            "examples": [{"image_id": i, "cross_entropy": before_caps[i]["caption"], "scst": after_caps[i]["caption"],
                          "references": after_caps[i]["references"][:2]}
                         for i in sorted(after_caps)[:10] if i in before_caps]}
    target = out or bundle
    training = {**manifest["training"], "scst": scst}
    keep = {k: manifest[k] for k in ("default_decoding",) if k in manifest}
    export = make_decoder(decoder.config, training_model=decoder.training_model)  # uncompiled: no optimizer state saved
    save_bundle(target, encoder=captioner.encoder, decoder=export, vocab=captioner.vocab, training=training,
                metrics=after, default_decoding=keep.get("default_decoding"), extra_files=files)
    update_manifest(target, {"cross_entropy_metrics": before})
    full = refresh_card(target)
    print(f"bundle written: {target} (SCST epoch {state['best_epoch']}; cross-entropy scores kept under "
          "'cross_entropy_metrics')", flush=True)
    return {"state": state, "exported": True, "manifest": full}
