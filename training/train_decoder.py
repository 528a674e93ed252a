"""Train the merge decoder on cached features with teacher forcing over whole captions.

Each caption is one row of ids (<start> w1 .. wn <end>), inputs = ids[:-1], targets = ids[1:],
with a masked sparse cross-entropy (padding never counts). Batches are drawn from length-sorted
pools so little padding is computed. Adam with gradient clipping; validation loss on the dev
split each epoch; early stopping; the best weights kept; a checkpoint (weights + optimizer)
written atomically each epoch, so ``resume`` continues after a kill with the same result.

Text without photos (``training/text_corpus.py``) enters in two ways. ``python -m training pretrain-text``
trains the language side alone: every row is a caption with the image input absent (zero features, so the
image projection gives relu(its bias): a learned "no photo" vector). A photo run then starts from it
(``init_from``: its vocabulary and every layer but the projection's kernel, whose input size is the encoder's) and
keeps reading text beside the photos (``text_mix`` text captions per photo caption, drawn anew each epoch), so the
words Flickr8k never shows are not forgotten.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

import numpy as np

from caption_core.config import Config
from caption_core.decoders import DecoderConfig, make_decoder, masked_loss, pad_captions
from caption_core.object_words import ObjectWords, noisy_vectors, object_tags
from caption_core.text import UNK_ID, Vocabulary, clean_caption

from .common import check_resume, read_json, save_keras_atomic, set_seeds, write_json

log = logging.getLogger("training.train_decoder")


@dataclasses.dataclass(frozen=True)
class DecoderTrainConfig(Config):
    out: str = ""  # run folder: checkpoints and state (build: <runs>/<bundle name>)
    decoder: DecoderConfig = DecoderConfig()  # the decoder's sizes and dropout (vocab_size, feature_dim: from the data)
    epochs: int = 20  # most epochs
    batch_size: int = 64  # captions per step
    learning_rate: float = 1e-3  # Adam
    clipnorm: float = 5.0  # gradient clipping (global norm per variable)
    patience: int = 3  # stop after this many epochs without a better dev loss
    min_count: int = 5  # vocabulary: words seen fewer times in the training captions become <unk>
    seed: int = 0  # seeds weights, dropout and batch order (a resumed run draws the same)
    blind: bool = False  # train on zeroed image features: the language-only baseline
    jit_compile: bool = False  # XLA: slower for the LSTM on CPU (docs/training.md)
    pool_batches: int = 50  # length-sorted pools of this many batches
    init_from: str = ""  # a `pretrain-text` run folder: its vocabulary and language layers start this run
    text: str = ""  # caption-text folder (coco/*.json, */*.token.txt) read beside the photos, with no photo input
    text_mix: float = 0.0  # text captions drawn each epoch per photo caption (needs --text; 0 = photos only)
    probe_epochs: int = 0  # the first N epochs train the image projection alone, every other layer frozen (a linear
    # probe before fine-tuning: with --init-from, the photo learns to move the pretrained language first)
    read_words: bool = False  # the decoder reads object words beside the features: the detector's and classifier's
    # for a photo, a text row's own caption's (caption_core/object_words.py)
    word_drop: float = 0.25  # text rows: each of the caption's own object words left out with this probability
    word_distractor: float = 0.25  # text rows: one more object word, not the caption's, put in with this probability

    def __post_init__(self):
        if self.text_mix > 0 and not self.text:
            raise ValueError("text_mix > 0 needs caption text: --text FOLDER (e.g. ../shared/data/caption-text)")
        if self.text_mix < 0:
            raise ValueError(f"text_mix must be >= 0, got {self.text_mix}")

    def decoder_config(self, vocab_size: int, feature_dim: int, grid_cells: int = 0,
                       object_words: tuple = ()) -> DecoderConfig:
        return dataclasses.replace(self.decoder, vocab_size=vocab_size, feature_dim=feature_dim,
                                   grid_cells=grid_cells if self.decoder.kind == "attention" else 0,
                                   object_words=tuple(object_words))


def caption_rows(examples, valid: np.ndarray, vocab: Vocabulary, max_length: int):
    """-> image index per caption (C,), padded ids (C, L)."""
    image_idx, ids = [], []
    for i, ex in enumerate(examples):
        if not valid[i]:
            continue
        for cap in ex.captions:
            clean = clean_caption(cap)
            if clean:
                image_idx.append(i)
                ids.append(vocab.encode(clean))
    return np.asarray(image_idx, np.int64), pad_captions(ids, max_length)


def text_rows(captions, vocab: Vocabulary, max_length: int) -> np.ndarray:
    """Raw caption strings -> padded ids (C, L): rows with no photo."""
    ids = [vocab.encode(clean) for clean in map(clean_caption, captions) if clean]
    return pad_captions(ids, max_length) if ids else np.zeros((0, 2), np.int32)


def with_text(image_idx: np.ndarray, caps: np.ndarray, text_caps: np.ndarray, no_photo: int, count: int,
              rng: np.random.Generator, own_rows: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The photo rows plus ``count`` text rows drawn without replacement, each pointing at feature row ``no_photo``
    (zeros), or with ``own_rows`` the k-th at row ``no_photo + k`` (its own object words)
    -> image index (C',), ids (C', L), the text rows drawn (K,)."""
    pick = np.sort(rng.choice(len(text_caps), size=min(count, len(text_caps)), replace=False))
    width = max(caps.shape[1], text_caps.shape[1])
    pad = lambda a: np.pad(a, ((0, 0), (0, width - a.shape[1])))  # noqa: E731
    rows = no_photo + np.arange(len(pick)) if own_rows else np.full(len(pick), no_photo)
    return (np.concatenate([image_idx, rows.astype(image_idx.dtype)]), np.concatenate([pad(caps), pad(text_caps[pick])]),
            pick)


def transfer_language(model, path: str) -> list[str]:
    """Copy a pretrained run's layers (``path``: its best.keras) into ``model`` by name where every weight's shape
    matches; of a layer whose kernel does not (the image projection: its input is the encoder's), the bias alone.
    -> the layers copied (``name:bias`` for a bias alone)."""
    import keras

    source = keras.saving.load_model(path, compile=False, safe_mode=True)
    theirs = {layer.name: layer for layer in source.layers}
    copied = []
    for layer in model.layers:
        other = theirs.get(layer.name)
        mine = layer.get_weights()
        if other is None or not mine:
            continue
        given = other.get_weights()
        if [w.shape for w in mine] == [w.shape for w in given]:
            layer.set_weights(given)
            copied.append(layer.name)
        elif len(mine) == 2 and len(given) == 2 and mine[1].shape == given[1].shape:  # Dense: (kernel, bias)
            layer.set_weights([mine[0], given[1]])
            copied.append(layer.name + ":bias")
    if "embedding" not in copied or "lstm" not in copied:
        raise ValueError(f"{path}: its embedding and LSTM do not fit this decoder (copied only {copied}); start from a "
                         "pretrain-text run with the same vocabulary and sizes (--embed-dim, --units)")
    return copied


def epoch_batches(lengths: np.ndarray, batch_size: int, pool_batches: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, sort within pools by length, cut into batches, shuffle the batches."""
    order = rng.permutation(len(lengths))
    batches = []
    pool = batch_size * pool_batches
    for p in range(0, len(order), pool):
        chunk = order[p:p + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def save_checkpoint(model, optimizer, path: str) -> None:
    """Weights and optimizer state, as one .keras file (the model compiled with the optimizer), atomically."""
    model.optimizer = optimizer
    model.compile(optimizer=optimizer)  # so .keras saves the optimizer variables too
    save_keras_atomic(model, path)


def load_checkpoint(model, optimizer, path: str) -> None:
    """Restore what ``save_checkpoint`` wrote into ``model`` and its (built) ``optimizer``."""
    import keras

    saved = keras.saving.load_model(path, compile=True, safe_mode=True)
    model.set_weights(saved.get_weights())
    for mine, theirs in zip(optimizer.variables, saved.optimizer.variables):
        mine.assign(theirs)


def reseed_dropout(model, seed: int, epoch: int) -> None:
    """Dropout masks depend only on (seed, epoch): a resumed run draws the same ones."""
    for layer in model.layers:
        gen = getattr(layer, "seed_generator", None)
        if gen is not None:
            gen.state.assign(np.array([seed * 100_003 + epoch, 0], dtype=gen.state.dtype))


class DecoderTrainer:
    def __init__(self, cfg: DecoderTrainConfig, vocab: Vocabulary, feature_dim: int, grid_cells: int = 0,
                 object_words: tuple = ()):
        import keras
        import tensorflow as tf

        self.cfg, self.vocab = cfg, vocab
        self.decoder = make_decoder(cfg.decoder_config(len(vocab), feature_dim, grid_cells, object_words))
        self.model = self.decoder.training_model
        self.optimizer = keras.optimizers.Adam(cfg.learning_rate, clipnorm=cfg.clipnorm)
        self.optimizer.build(self.model.trainable_variables)
        D = self.decoder.config.input_dim  # features, then object words
        spec = [tf.TensorSpec([None, D], tf.float32), tf.TensorSpec([None, None], tf.int32)]
        model, optimizer = self.model, self.optimizer

        def step_over(variables):
            """A training step that changes ``variables`` alone (every trainable one, or the probe's)."""
            @tf.function(input_signature=spec, jit_compile=cfg.jit_compile)
            def step(feats, caps):
                x, y = caps[:, :-1], caps[:, 1:]  # (B, T-1): inputs and targets, shifted by one
                with tf.GradientTape() as tape:
                    loss = masked_loss(y, model({"features": feats, "tokens": x}, training=True))
                    loss += tf.add_n([0.0, *model.losses])  # the attention decoder's penalty (add_loss); none for merge
                grads = tape.gradient(loss, variables)
                optimizer.apply_gradients(zip(grads, variables))
                return loss
            return step

        train_step = step_over(model.trainable_variables)
        layers_ = {layer.name for layer in model.layers}
        probe_step = step_over([v for name in ("feature_projection", "grid_projection") if name in layers_
                                for v in model.get_layer(name).trainable_variables])  # probe_epochs: the projection

        @tf.function(input_signature=spec, jit_compile=cfg.jit_compile)
        def eval_step(feats, caps):
            x, y = caps[:, :-1], caps[:, 1:]
            logits = model({"features": feats, "tokens": x}, training=False)  # (B, T-1, V)
            per = tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)  # (B, T-1)
            mask = tf.cast(y != 0, per.dtype)
            return tf.reduce_sum(per * mask), tf.reduce_sum(mask)

        self.train_step, self.eval_step, self.probe_step = train_step, eval_step, probe_step

    # -- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, path: str) -> None:
        save_checkpoint(self.model, self.optimizer, path)

    def load_checkpoint(self, path: str) -> None:
        load_checkpoint(self.model, self.optimizer, path)

    def reseed_dropout(self, epoch: int) -> None:
        reseed_dropout(self.model, self.cfg.seed, epoch)

    def run_epoch(self, feats: np.ndarray, image_idx: np.ndarray, caps: np.ndarray, rng,
                  probe: bool = False) -> tuple[float, float]:
        """One epoch; ``probe``: the image projection's weights alone change."""
        lengths = (caps != 0).sum(1)
        total, steps = 0.0, 0
        step = self.probe_step if probe else self.train_step
        t0 = time.perf_counter()
        for batch in epoch_batches(lengths, self.cfg.batch_size, self.cfg.pool_batches, rng):
            L = int(lengths[batch].max())
            total += float(step(np.asarray(feats[image_idx[batch]], np.float32), caps[batch, :L]))
            steps += 1
        return total / max(steps, 1), time.perf_counter() - t0

    def evaluate(self, feats: np.ndarray, image_idx: np.ndarray, caps: np.ndarray, batch_size: int = 256) -> float:
        lengths = (caps != 0).sum(1)
        order = np.argsort(lengths, kind="stable")
        loss_sum, count = 0.0, 0.0
        for b in range(0, len(order), batch_size):
            batch = order[b:b + batch_size]
            L = int(lengths[batch].max())
            s, n = self.eval_step(np.asarray(feats[image_idx[batch]], np.float32), caps[batch, :L])
            loss_sum, count = loss_sum + float(s), count + float(n)
        return loss_sum / max(count, 1.0)


def train_decoder(cfg: DecoderTrainConfig, train_examples, train_feats, train_valid, dev_examples, dev_feats,
                  dev_valid, resume: bool = False, stop_after_epochs: int | None = None, grid_cells: int = 0,
                  vocab: Vocabulary | None = None, text_captions=None, train_signals=None, dev_signals=None) -> dict:
    """Train (or resume) and return the state: vocabulary, best epoch, history, timings.
    The best weights are in ``<out>/best.keras``, the vocabulary in ``<out>/vocab.json``.
    ``vocab``: use this vocabulary (default: ``init_from``'s, else one built from the training captions);
    ``text_captions``: raw captions without photos, ``text_mix`` of them per photo caption drawn each epoch;
    ``train_signals`` / ``dev_signals`` (``read_words``): each split's (class probabilities (N, 1000), the detector's
    ``Objects`` per photo), row for row with its features: what the photos' object words are read from."""
    os.makedirs(cfg.out, exist_ok=True)
    state_path, vocab_path = os.path.join(cfg.out, "state.json"), os.path.join(cfg.out, "vocab.json")
    ckpt, best_path = os.path.join(cfg.out, "last.keras"), os.path.join(cfg.out, "best.keras")
    state = read_json(state_path) if resume else None
    state = check_resume(state, cfg, log)  # only --epochs may change: the run extended (or cut short)
    set_seeds(cfg.seed)
    if cfg.text_mix > 0 and not text_captions:
        raise ValueError(f"text_mix > 0 needs caption text, and none was read from '{cfg.text}'")
    if state is not None and os.path.exists(vocab_path):
        vocab = Vocabulary.load(vocab_path)
    elif vocab is not None or cfg.init_from:
        if cfg.init_from:
            pretrained = Vocabulary.load(os.path.join(cfg.init_from, "vocab.json"))
            if vocab is not None and vocab.id_to_word != pretrained.id_to_word:
                raise ValueError(f"the vocabulary given differs from {cfg.init_from}/vocab.json, whose layers start "
                                 "this run: use that one")
            vocab = pretrained
        vocab.save(vocab_path)
    else:  # the training captions' words, the text's too where it is read (its words are what it is read for)
        vocab = Vocabulary.build([clean_caption(c) for i, e in enumerate(train_examples) if train_valid[i]
                                  for c in e.captions] + [clean_caption(c) for c in (text_captions or [])],
                                 min_count=cfg.min_count)
        vocab.save(vocab_path)
    train_idx, train_caps = caption_rows(train_examples, train_valid, vocab, cfg.decoder.max_length)
    dev_idx, dev_caps = caption_rows(dev_examples, dev_valid, vocab, cfg.decoder.max_length)
    # in memory, in their cached dtype (grid features: float16, cast per batch)
    train_feats, dev_feats = np.array(train_feats), np.array(dev_feats)
    if cfg.blind:
        train_feats, dev_feats = np.zeros_like(train_feats), np.zeros_like(dev_feats)
    text_caps = text_rows(text_captions or [], vocab, cfg.decoder.max_length)
    words, feature_dim = None, train_feats.shape[1]
    if cfg.read_words:  # each photo's object words after its features; text rows get their own each epoch
        if train_signals is None or dev_signals is None:
            raise ValueError("read_words needs the photos' class probabilities and detections (train_signals, "
                             "dev_signals): build computes them")
        words = ObjectWords(object_tags(vocab), vocab, cfg.decoder.word_detector, cfg.decoder.word_classifier)
        train_feats = np.concatenate([train_feats, words.photo_vectors(*train_signals, len(train_feats))], axis=1)
        dev_feats = np.concatenate([dev_feats, words.photo_vectors(*dev_signals, len(dev_feats))], axis=1)
        text_tags = [words.caption_indices(" ".join(vocab.id_to_word[t] for t in row if t > UNK_ID)) for row in text_caps]
    no_photo = len(train_feats)  # the text rows' feature row: zeros (with object words: one row each, from no_photo on)
    if cfg.text_mix > 0 and words is None:
        train_feats = np.concatenate([train_feats, np.zeros((1, *train_feats.shape[1:]), train_feats.dtype)])
    trainer = DecoderTrainer(cfg, vocab, feature_dim, grid_cells, words.tags if words else ())
    if state is not None and os.path.exists(ckpt):
        trainer.load_checkpoint(ckpt)
        log.info("resuming after epoch %d", state["epochs_done"])
    else:
        copied = transfer_language(trainer.model, os.path.join(cfg.init_from, "best.keras")) if cfg.init_from else []
        state = {"config": cfg.to_dict(), "epochs_done": 0, "best_epoch": 0, "best_dev_loss": None,
                 "bad_epochs": 0, "history": [], "train_captions": int(len(train_caps)),
                 "dev_captions": int(len(dev_caps)), "vocab_size": len(vocab), "stopped": None,
                 "text_captions": int(len(text_caps)),
                 "text_per_epoch": int(min(round(cfg.text_mix * len(train_caps)), len(text_caps))),
                 "init_from": {"run": cfg.init_from, "layers": copied} if cfg.init_from else None}
    print(f"decoder: {len(train_caps)} training captions ({len(set(train_idx.tolist()))} images), "
          + (f"{state['text_per_epoch']} of {len(text_caps)} text captions an epoch, " if cfg.text_mix > 0 else "")
          + f"{len(dev_caps)} dev captions, vocabulary {len(vocab)}{' [blind]' if cfg.blind else ''}"
          + (f", started from {cfg.init_from}" if cfg.init_from else ""), flush=True)
    done_now = 0
    while state["epochs_done"] < cfg.epochs and state["stopped"] is None:
        epoch = state["epochs_done"] + 1
        rng = np.random.default_rng([cfg.seed, epoch])  # same batches whether resumed or not
        trainer.reseed_dropout(epoch)
        idx, caps = train_idx, train_caps
        feats = train_feats
        if cfg.text_mix > 0:
            idx, caps, pick = with_text(train_idx, train_caps, text_caps, no_photo, state["text_per_epoch"], rng,
                                        own_rows=words is not None)
        if cfg.text_mix > 0 and words is not None:  # each text row: zero features, its caption's words made noisy
            tags = noisy_vectors([text_tags[p] for p in pick], words.size, cfg.word_drop, cfg.word_distractor, rng)
            text_feats = np.concatenate([np.zeros((len(pick), feature_dim), train_feats.dtype),
                                         tags.astype(train_feats.dtype)], axis=1)  # (K, D + W)
            feats = np.concatenate([train_feats, text_feats])
        loss, seconds = trainer.run_epoch(feats, idx, caps, rng, probe=epoch <= cfg.probe_epochs)
        dev_loss = trainer.evaluate(dev_feats, dev_idx, dev_caps)
        improved = state["best_dev_loss"] is None or dev_loss < state["best_dev_loss"]
        if improved:
            save_keras_atomic(trainer.model, best_path)
            state.update(best_epoch=epoch, best_dev_loss=dev_loss, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        state["history"].append({"epoch": epoch, "train_loss": round(loss, 5), "dev_loss": round(dev_loss, 5),
                                 "seconds": round(seconds, 2),
                                 "captions_per_second": round(len(caps) / seconds, 1)})
        state["epochs_done"] = epoch
        if state["bad_epochs"] >= cfg.patience:
            state["stopped"] = f"early stopping: no better dev loss for {cfg.patience} epochs"
        trainer.save_checkpoint(ckpt)
        write_json(state_path, state)
        print(f"epoch {epoch}: train loss {loss:.4f}, dev loss {dev_loss:.4f}{' *' if improved else ''} "
              f"({seconds:.1f} s, {len(caps) / seconds:.0f} captions/s)", flush=True)
        done_now += 1
        if stop_after_epochs is not None and done_now >= stop_after_epochs:
            break
    return state
