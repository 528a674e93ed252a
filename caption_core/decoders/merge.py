"""The merge decoder: image features and words meet after the LSTM (Tanti et al. 2018, "Where to put the image
in an image caption generator").

    features (B, D) -> Dropout -> Dense(units, relu)                       -> img  (B, U)
    tokens   (B, T) -> Embedding(mask_zero) -> Dropout -> LSTM(U, seq)     -> seq  (B, T, U)
    img[:, None] + seq -> Dense(units, relu) -> Dense(vocab)               -> logits (B, T, V)

The Keras training model reads whole captions with teacher forcing (what is trained and saved).
``MergeInference`` runs the same graph in NumPy one word at a time with the LSTM state carried (what decodes):
one small step per word, never re-reading the prefix.
"""

from __future__ import annotations

import numpy as np

from .base import Dense, DecoderConfig, KerasDecoder, NumpyDecoder, register_decoder, sigmoid


def build_merge_decoder(config: DecoderConfig):
    """The Keras training model: inputs ``features`` (B, D + W) float32 (W: object words, 0 for none), ``tokens`` (B, T) int32 -> logits
    (B, T, V), teacher forcing over whole captions. Decoding runs ``MergeInference`` on its weights."""
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
    features = keras.Input((c.input_dim,), name="features")  # (B, D + W): features, then object words (if any)
    tokens = keras.Input((None,), dtype="int32", name="tokens")  # (B, T)
    img = feat_dense(feat_dropout(features))  # (B, U)
    seq, _, _ = lstm(emb_dropout(embedding(tokens)))  # (B, T, U)
    merged = layers.Add(name="merge")([layers.Reshape((1, c.units), name="img_time")(img), seq])  # (B, T, U)
    logits = head(merge_dense(merged))  # (B, T, V)
    return keras.Model({"features": features, "tokens": tokens}, logits, name="merge_decoder")



class MergeInference(NumpyDecoder):
    """The decoder's inference graph in NumPy: what decodes, in the app and everywhere else.

    Decoding calls ``step`` once per word. Through Keras each call paid a fixed overhead (a
    ``tf.function`` call and numpy round trips) far above its arithmetic, so inference runs on the
    trained weights in NumPy: an embedding lookup whose input projection is precomputed for every word,
    one (B, U) x (U, 4U) matmul, the merge and the (B, U) x (U, V) head (each a ``Dense``). The arithmetic is the Keras
    graph's, in float32, in the same order. ``load`` reads a saved ``.keras`` file with h5py alone, so
    serving a bundle whose encoder is not a Keras model never imports TensorFlow.
    """

    LAYERS = ("embedding", "lstm", "feature_projection", "merge_dense", "logits")  # the layers it reads, by name

    def __init__(self, config: DecoderConfig, layer_weights: dict[str, list[np.ndarray]]):
        """``layer_weights``: layer name -> its weight arrays, as Keras orders them (``get_weights``)."""
        self._keep(config, layer_weights)
        c = config
        f32 = lambda v: np.ascontiguousarray(np.asarray(v, np.float32))  # noqa: E731
        (emb,) = layer_weights["embedding"]
        kernel, recurrent, bias = layer_weights["lstm"]
        self._proj_w, self._proj_b = map(f32, layer_weights["feature_projection"])  # (D, U), (U,)
        self._merge_w, self._merge_b = map(f32, layer_weights["merge_dense"])  # (U, U), (U,)
        self._head_w, self._head_b = map(f32, layer_weights["logits"])  # (U, V), (V,)
        expected = {"embedding": (c.vocab_size, c.embed_dim), "lstm kernel": (c.embed_dim, 4 * c.units),
                    "lstm recurrent kernel": (c.units, 4 * c.units), "feature_projection": (c.input_dim, c.units),
                    "merge_dense": (c.units, c.units), "logits": (c.units, c.vocab_size)}
        got = {"embedding": emb.shape, "lstm kernel": kernel.shape, "lstm recurrent kernel": recurrent.shape,
               "feature_projection": self._proj_w.shape, "merge_dense": self._merge_w.shape, "logits": self._head_w.shape}
        self._check_shapes(expected, got)
        self._word_gates = f32(f32(emb) @ f32(kernel))  # (V, 4U): each word's input projection, computed once
        self._recurrent = Dense(recurrent)  # (U, 4U), gates i, f, c, o
        self._lstm_bias = f32(bias)  # (4U,)
        self._merge = Dense(self._merge_w)  # (U, U)
        self._head = Dense(self._head_w)  # (U, V): the step's matmuls in Dense's fastest way for a photo's beams

    state_arrays = 3  # img, h, c

    def initial_state(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """features (N, D) -> decoding state (img (N, U), h (N, U), c (N, U))."""
        x = np.asarray(features, dtype=np.float32)
        img = np.maximum(x @ self._proj_w + self._proj_b, 0.0)  # (N, U)
        zeros = np.zeros_like(img)
        return img, zeros, zeros.copy()

    def step(self, tokens: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        """tokens (B,) int, state (img, h, c) -> log_probs (B, V) float32, new state. Decoding's step."""
        img, h, c = state
        U = self.config.units
        z = self._word_gates[tokens] + self._recurrent(h)  # (B, 4U)
        z += self._lstm_bias
        gates = sigmoid(z)  # (B, 4U): i, f, (c: unused), o
        c = gates[:, U:2 * U] * c + gates[:, :U] * np.tanh(z[:, 2 * U:3 * U])  # (B, U)
        h = gates[:, 3 * U:] * np.tanh(c)  # (B, U)
        merged = self._merge(img + h)  # (B, U)
        merged += self._merge_b
        np.maximum(merged, 0.0, out=merged)
        logits = self._head(merged)  # (B, V)
        logits += self._head_b
        logits -= logits.max(axis=1, keepdims=True)
        logits -= np.log(np.exp(logits).sum(axis=1, keepdims=True))  # log_softmax
        return logits, (img, h, c)


@register_decoder
class MergeDecoder(KerasDecoder):
    """The merge model built by ``build_merge_decoder`` and its ``MergeInference``."""

    kind = "merge"
    inference_class = MergeInference
    build = staticmethod(build_merge_decoder)
