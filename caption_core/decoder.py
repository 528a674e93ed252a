"""The merge decoder: image features and words meet after the LSTM.

    features (B, D) -> Dropout -> Dense(units, relu)                       -> img  (B, U)
    tokens   (B, T) -> Embedding(mask_zero) -> Dropout -> LSTM(U, seq)     -> seq  (B, T, U)
    img[:, None] + seq -> Dense(units, relu) -> Dense(vocab)               -> logits (B, T, V)

Two Keras models share the same layer objects (so the same weights):
- ``training_model``: whole captions, teacher forcing, logits for every position;
- ``step_model``: one token per call with the LSTM state carried, so decoding a caption costs one
  small step per word instead of re-reading the whole prefix.

Padding is handled by the loss (``masked_loss`` with explicit sample weights), because Keras
``Add`` drops the Embedding mask.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Sizes of the merge decoder. Saved in every bundle's manifest."""

    vocab_size: int  # number of ids, reserved tokens included
    feature_dim: int  # D: size of the encoder's feature vector
    embed_dim: int = 256  # word embedding size
    units: int = 256  # LSTM units == image projection size == merge size (U)
    feature_dropout: float = 0.5  # dropout on the image features before the projection
    embed_dropout: float = 0.5  # dropout on word embeddings before the LSTM
    max_length: int = 32  # most tokens in a caption, <start> and <end> included

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DecoderConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown DecoderConfig fields {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DecoderConfig":
        return cls.from_dict(json.loads(text))


def build_decoder(config: DecoderConfig):
    """Return ``(training_model, step_model)``, sharing weights.

    training_model: inputs ``features`` (B, D) float32, ``tokens`` (B, T) int32 -> logits (B, T, V)
    step_model:     inputs ``img`` (B, U), ``token`` (B, 1), ``h`` (B, U), ``c`` (B, U)
                    -> ``log_probs`` (B, V), ``h`` (B, U), ``c`` (B, U)
    ``project_model``: features (B, D) -> img (B, U), computed once per image before decoding.
    """
    import keras
    from keras import layers

    c = config
    feat_dropout = layers.Dropout(c.feature_dropout, name="feature_dropout")
    feat_dense = layers.Dense(c.units, activation="relu", name="feature_projection")
    embedding = layers.Embedding(c.vocab_size, c.embed_dim, mask_zero=True, name="embedding")
    emb_dropout = layers.Dropout(c.embed_dropout, name="embedding_dropout")
    lstm = layers.LSTM(c.units, return_sequences=True, return_state=True, name="lstm")
    merge_dense = layers.Dense(c.units, activation="relu", name="merge_dense")
    head = layers.Dense(c.vocab_size, name="logits")

    # -- training model: whole captions ---------------------------------------------------
    features = keras.Input((c.feature_dim,), name="features")  # (B, D)
    tokens = keras.Input((None,), dtype="int32", name="tokens")  # (B, T)
    img = feat_dense(feat_dropout(features))  # (B, U)
    seq, _, _ = lstm(emb_dropout(embedding(tokens)))  # (B, T, U)
    merged = layers.Add(name="merge")([layers.Reshape((1, c.units), name="img_time")(img), seq])  # (B, T, U)
    logits = head(merge_dense(merged))  # (B, T, V)
    training_model = keras.Model({"features": features, "tokens": tokens}, logits, name="merge_decoder")

    # -- image projection, once per image --------------------------------------------------
    project_model = keras.Model(features, feat_dense(features), name="project")  # (B, U)

    # -- one step with the LSTM state carried ----------------------------------------------
    img_in = keras.Input((c.units,), name="img")  # (B, U)
    token = keras.Input((1,), dtype="int32", name="token")  # (B, 1)
    h_in = keras.Input((c.units,), name="h")  # (B, U)
    c_in = keras.Input((c.units,), name="c")  # (B, U)
    step_seq, h_out, c_out = lstm(embedding(token), initial_state=[h_in, c_in])  # (B, 1, U)
    with warnings.catch_warnings():  # the one-token mask is all ones; dropping it is intended
        warnings.filterwarnings("ignore", message=".*does not support masking.*")
        step_last = layers.Reshape((c.units,), name="squeeze")(step_seq)  # (B, U)
    step_merged = layers.Add(name="step_merge")([img_in, step_last])  # (B, U)
    step_logits = head(merge_dense(step_merged))  # (B, V)
    log_probs = layers.Activation("log_softmax", name="log_probs")(step_logits)  # (B, V)
    step_model = keras.Model(
        {"img": img_in, "token": token, "h": h_in, "c": c_in},
        {"log_probs": log_probs, "h": h_out, "c": c_out},
        name="merge_decoder_step",
    )
    return training_model, project_model, step_model


def masked_loss(targets, logits, sample_weight=None):
    """Mean sparse cross-entropy over non-pad targets. targets (B, T) int, logits (B, T, V)."""
    import keras
    from keras import ops

    per_token = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)  # (B, T)
    mask = ops.cast(ops.not_equal(targets, 0), per_token.dtype)  # (B, T)
    if sample_weight is not None:
        mask = mask * ops.cast(sample_weight, per_token.dtype)
    return ops.sum(per_token * mask) / ops.maximum(ops.sum(mask), 1.0)


def teacher_forcing_pairs(token_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Padded captions (B, T) -> inputs (B, T-1) and targets (B, T-1), shifted by one."""
    token_ids = np.asarray(token_ids)
    return token_ids[:, :-1], token_ids[:, 1:]


def pad_captions(captions: list[list[int]], max_length: int) -> np.ndarray:
    """Id lists -> right-padded int32 array (B, L), cut to ``max_length`` (keeping <end> last)."""
    length = min(max_length, max(len(c) for c in captions))
    out = np.zeros((len(captions), length), dtype=np.int32)
    for i, ids in enumerate(captions):
        if len(ids) > length:
            ids = list(ids[: length - 1]) + [ids[-1]]
        out[i, : len(ids)] = ids
    return out


class MergeDecoder:
    """Holds the three models built by ``build_decoder`` plus a compiled step function."""

    def __init__(self, config: DecoderConfig, training_model=None):
        self.config = config
        built = build_decoder(config)
        self.training_model, self.project_model, self.step_model = built
        if training_model is not None:
            self.training_model.set_weights(training_model.get_weights())
        self._step_fn = None
        self._project_fn = None
        self._score_fn = None

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str) -> None:
        self.training_model.save(path)

    @classmethod
    def load(cls, path: str, config: DecoderConfig) -> "MergeDecoder":
        import keras

        trained = keras.saving.load_model(path, compile=False, safe_mode=True)
        return cls(config, training_model=trained)

    # -- fast inference ---------------------------------------------------------------------
    def _compile(self):
        import tensorflow as tf

        U, D = self.config.units, self.config.feature_dim
        step_model, project_model, training_model = self.step_model, self.project_model, self.training_model

        @tf.function(jit_compile=False, input_signature=[
            tf.TensorSpec([None, U], tf.float32), tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None, U], tf.float32), tf.TensorSpec([None, U], tf.float32)])
        def step_fn(img, token, h, c):
            with warnings.catch_warnings():  # see build_decoder: the one-token mask is dropped on purpose
                warnings.filterwarnings("ignore", message=".*does not support masking.*")
                out = step_model({"img": img, "token": token[:, None], "h": h, "c": c}, training=False)
            return out["log_probs"], out["h"], out["c"]

        @tf.function(jit_compile=False, input_signature=[tf.TensorSpec([None, D], tf.float32)])
        def project_fn(features):
            return project_model(features, training=False)

        @tf.function(jit_compile=False, input_signature=[
            tf.TensorSpec([None, D], tf.float32), tf.TensorSpec([None, None], tf.int32)])
        def score_fn(features, tokens):
            logits = training_model({"features": features, "tokens": tokens}, training=False)
            return tf.nn.log_softmax(logits, axis=-1)

        self._step_fn, self._project_fn, self._score_fn = step_fn, project_fn, score_fn

    def initial_state(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """features (N, D) -> decoding state (img (N, U), h (N, U), c (N, U))."""
        if self._project_fn is None:
            self._compile()
        img = self._project_fn(np.asarray(features, dtype=np.float32)).numpy()  # (N, U)
        zeros = np.zeros_like(img)
        return img, zeros, zeros.copy()

    def step(self, tokens: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        """tokens (B,) int, state (img, h, c) -> log_probs (B, V), new state. Decoding's step."""
        if self._step_fn is None:
            self._compile()
        img, h, c = state
        log_probs, h, c = self._step_fn(img, np.asarray(tokens, dtype=np.int32), h, c)
        return log_probs.numpy(), (img, h.numpy(), c.numpy())

    def token_log_probs(self, features: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
        """Teacher-forced log-probability of each next token.

        features (N, D), token_ids (N, T) starting with <start> -> (N, T-1): log p(token[t+1] | ...).
        """
        if self._score_fn is None:
            self._compile()
        inputs, targets = teacher_forcing_pairs(np.asarray(token_ids, dtype=np.int32))
        log_probs = self._score_fn(np.asarray(features, dtype=np.float32), inputs).numpy()  # (N, T-1, V)
        return np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]  # (N, T-1)
