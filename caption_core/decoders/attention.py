"""The attention decoder: at every word an LSTM weighs the encoder's grid cells (Xu et al. 2015, "Show, Attend
and Tell", soft attention), and those weights are a map of where it looked.

    features (B, N*C) -> (B, N, C) -> Dense(E, relu) -> Dropout               -> values (B, N, E)
    tokens   (B, T)   -> Embedding -> Dropout                                  -> words  (B, T, W)
    AttentionLSTM(words, values)                                              -> h (B, T, U), ctx (B, T, E), alpha (B, T, N)
    [h, ctx] -> Dense(U, relu) -> Dropout -> Dense(V)                         -> logits (B, T, V)

``build_attention_decoder`` is the Keras training model (teacher forcing over whole captions; the same
``{"features", "tokens"} -> logits`` interface as the merge model, so cross-entropy and SCST training are
shared). ``AttentionInference`` runs the graph in NumPy one word at a time with the state carried: the same
``initial_state`` / ``step`` as the merge decoder's, so every decoding strategy drives it unchanged, and
``attention_maps`` gives the weights over the grid for each word of a caption.
"""

from __future__ import annotations

import numpy as np

from ..text import END_ID
from .base import Dense, DecoderConfig, KerasDecoder, NumpyDecoder, register_decoder, sigmoid, teacher_forcing_pairs


def build_attention_decoder(config: DecoderConfig):
    """The Keras training model: ``features`` (B, N*C) float32, ``tokens`` (B, T) int32 -> logits (B, T, V)."""
    import keras
    from keras import layers

    from .attention_layers import AttentionLSTM

    c = config
    if not c.grid_cells or c.feature_dim % c.grid_cells:
        raise ValueError(f"an attention decoder needs grid features: feature_dim {c.feature_dim} is not "
                         f"grid_cells {c.grid_cells} x a cell size (build it on an encoder with pooling='grid')")
    features = keras.Input((c.feature_dim,), name="features")  # (B, N*C)
    tokens = keras.Input((None,), dtype="int32", name="tokens")  # (B, T)
    grid = layers.Reshape((c.grid_cells, c.feature_dim // c.grid_cells), name="grid")(features)  # (B, N, C)
    values = layers.Dense(c.context_dim, activation="relu", name="grid_projection")(grid)  # (B, N, E)
    values = layers.Dropout(c.feature_dropout, name="grid_dropout")(values)
    words = layers.Embedding(c.vocab_size, c.embed_dim, name="embedding")(tokens)  # (B, T, W)
    words = layers.Dropout(c.embed_dropout, name="embedding_dropout")(words)
    h, ctx, _ = AttentionLSTM(c.units, c.attention_dim, c.attention_penalty, END_ID, name="attention_lstm")(
        [words, values, tokens])  # (B, T, U), (B, T, E), (B, T, N)
    merged = layers.Dense(c.units, activation="relu", name="merge_dense")(
        layers.Concatenate(name="merge")([h, ctx]))  # (B, T, U)
    merged = layers.Dropout(c.embed_dropout, name="merge_dropout")(merged)
    logits = layers.Dense(c.vocab_size, name="logits")(merged)  # (B, T, V)
    return keras.Model({"features": features, "tokens": tokens}, logits, name="attention_decoder")


class PhotoGrid:
    """One photo's place in its batch's projected grid (values (P, N, E), keys (P, N, A), made once by
    ``initial_state``): what every state row (beam) of that photo refers to, instead of a copy."""

    __slots__ = ("values", "keys", "index")

    def __init__(self, values: np.ndarray, keys: np.ndarray, index: int):
        self.values, self.keys, self.index = values, keys, index


class GridRows(np.ndarray):
    """The state's grid: (B,) object array of each row's ``PhotoGrid``. The strategies reorder it like h and c (a
    reorder copies references); ``rows`` gives the step the rows' values and keys: one photo's grid, (1, N, E) and
    (1, N, A), where every row is that photo's (a photo captioned alone: no copy at all), the batch's own where the
    rows are its photos in order, else (B, N, E) and (B, N, A) gathered, once: kept with the array, for as long as its
    rows refer to the same photos (the step hands the array on; a reorder makes another), as the rows' own copies
    used to be."""

    def __array_finalize__(self, obj):
        self._kept = None  # (the rows' photo indices, their values and keys), once read

    @classmethod
    def of(cls, values: np.ndarray, keys: np.ndarray) -> "GridRows":
        """One row per photo of the batch: values (P, N, E), keys (P, N, A)."""
        grid = np.empty(len(values), object).view(cls)
        grid[:] = [PhotoGrid(values, keys, i) for i in range(len(values))]
        return grid

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        first = self[0]
        index = np.fromiter((g.index for g in self), np.int64, len(self))  # (B,)
        if self._kept is not None and self._kept[0] is first.values and np.array_equal(self._kept[1], index):
            return self._kept[2]
        if not all(g.values is first.values for g in self):  # nothing here makes such rows: say so, never mix them up
            raise ValueError("attention state rows from different batches: decode the photos together, from one "
                             "initial_state of all their features")
        if np.all(index == first.index):  # one photo's rows
            rows = first.values[first.index:first.index + 1], first.keys[first.index:first.index + 1]
        elif np.array_equal(index, np.arange(len(first.values))):  # the batch's photos in order
            rows = first.values, first.keys
        else:
            rows = first.values[index], first.keys[index]
        self._kept = (first.values, index, rows)
        return rows


class AttentionInference(NumpyDecoder):
    """The attention decoder's inference graph in NumPy, read from the saved weights (h5py; no Keras import).

    State: (grid (B,) ``GridRows``, h (B, U), c (B, U), hq (B, A + E + 4U)); the grid's projection (values (N, E))
    and keys (N, A) are computed once per photo in ``initial_state``, and each row of the state refers to its
    photo's: beam search reorders references, not the 100-170 KB a row those arrays take (49 or 81 cells), and where
    every row is one photo's (a photo captioned alone: the app's case) the step reads its grid once for all of them
    (the beams' contexts are one (B, N) x (N, E) product). ``hq`` is h's products with the next
    step's query, gate and recurrent weights, computed with this step's merge (one matmul of the new h). A step
    costs the merge decoder's step plus the attention: (B, N, A) tanh and two (B, N) x (N, E) sums. Matmuls that
    read the same input are one each (the new h: the merge and the next step's query, gate and recurrent; the
    context: the LSTM's input and the merge), and a photo's few beam rows go through ``Dense``'s per-row products:
    what brought the attention decoder's decoding to its encoder's time (benchmarks/attention_speed.json).
    """

    LAYERS = ("grid_projection", "embedding", "attention_lstm", "merge_dense", "logits")
    WHAT = "attention decoder"
    state_arrays = 4

    def __init__(self, config: DecoderConfig, layer_weights: dict[str, list[np.ndarray]]):
        self._keep(config, layer_weights)
        c = config
        f32 = lambda v: np.ascontiguousarray(np.asarray(v, np.float32))  # noqa: E731
        self._grid_w, self._grid_b = map(f32, layer_weights["grid_projection"])  # (C, E), (E,)
        (emb,) = layer_weights["embedding"]
        (self._key_w, self._key_b, self._query_w, score, self._gate_w, self._gate_b, self._init_h_w, self._init_h_b,
         self._init_c_w, self._init_c_b, kernel, self._recurrent, self._bias) = map(f32, layer_weights["attention_lstm"])
        self._merge_w, self._merge_b = map(f32, layer_weights["merge_dense"])  # (U + E, U), (U,)
        self._head_w, self._head_b = map(f32, layer_weights["logits"])  # (U, V), (V,)
        cell = c.feature_dim // max(c.grid_cells, 1)
        expected = {"grid_projection": (cell, c.context_dim), "embedding": (c.vocab_size, c.embed_dim),
                    "attention kernel": (c.embed_dim + c.context_dim, 4 * c.units),
                    "attention keys": (c.context_dim, c.attention_dim), "logits": (c.units, c.vocab_size)}
        got = {"grid_projection": self._grid_w.shape, "embedding": emb.shape, "attention kernel": kernel.shape,
               "attention keys": self._key_w.shape, "logits": self._head_w.shape}
        self._check_shapes(expected, got)
        w = c.embed_dim
        self._word_gates = f32(f32(emb) @ kernel[:w])  # (V, 4U): each word's input projection, computed once
        self._word_gates += self._bias
        self._ctx_kernel = f32(kernel[w:])  # (E, 4U)
        self._merge_h, self._merge_ctx = f32(self._merge_w[:c.units]), f32(self._merge_w[c.units:])  # (U, U), (E, U)
        # what decodes: the matmuls that share their input fused, each in both layouts (Dense)
        self._from_h = Dense(np.concatenate([self._query_w, self._gate_w, self._recurrent], axis=1))  # (U, A + E + 4U)
        self._from_new_h = Dense(np.concatenate([self._merge_h, self._from_h.w], axis=1))  # (U, U + A + E + 4U)
        self._from_ctx = Dense(np.concatenate([self._ctx_kernel, self._merge_ctx], axis=1))  # (E, 4U + U)
        self._head = Dense(self._head_w)  # (U, V)
        self._score_v = f32(score)  # (A,)

    def initial_state(self, features: np.ndarray) -> tuple:
        """features (N, cells * C) -> (grid (N,) ``GridRows``, h (N, U), c (N, U), hq (N, A + E + 4U))."""
        c = self.config
        x = np.asarray(features, np.float32).reshape(len(features), c.grid_cells, -1)  # (N, cells, C)
        values = np.maximum(x @ self._grid_w + self._grid_b, 0.0)  # (N, cells, E)
        keys = values @ self._key_w + self._key_b  # (N, cells, A)
        mean = values.mean(axis=1)  # (N, E)
        h = np.tanh(mean @ self._init_h_w + self._init_h_b)  # (N, U)
        cell = np.tanh(mean @ self._init_c_w + self._init_c_b)  # (N, U)
        return GridRows.of(values, keys), h, cell, self._from_h(h)

    def attend(self, values: np.ndarray, keys: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-> alpha (B, N): the weights over the cells, and ctx (B, E): the gated context."""
        return self._attend(values, keys, self._from_h(h))[:2]

    def _attend(self, values: np.ndarray, keys: np.ndarray, hq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``hq`` = h @ [query | gate | recurrent] (B, A + E + 4U) -> alpha (B, N), the gated ctx (B, E), and the
        recurrent part of the gates (B, 4U). ``values`` (B, N, E) and ``keys`` (B, N, A) are each row's, or (1, N, E)
        and (1, N, A): one photo's for all."""
        a, e = self.config.attention_dim, self.config.context_dim
        hidden = np.add(keys, hq[:, None, :a])  # (B, N, A): keys (B or 1, N, A)
        scores = np.tanh(hidden, out=hidden) @ self._score_v  # (B, N)
        scores -= scores.max(axis=1, keepdims=True)
        alpha = np.exp(scores)
        alpha /= alpha.sum(axis=1, keepdims=True)  # (B, N)
        if len(values) == 1:  # one photo's grid for every row: one product
            ctx = alpha @ values[0]  # (B, E)
        else:
            ctx = np.matmul(alpha[:, None, :], values)[:, 0]  # (B, E)
        ctx *= sigmoid(hq[:, a:a + e] + self._gate_b)
        return alpha, ctx, hq[:, a + e:]

    def _step(self, tokens: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple, np.ndarray]:
        grid, h, c, hq = state
        U = self.config.units
        alpha, ctx, recurrent = self._attend(*grid.rows(), hq)
        from_ctx = self._from_ctx(ctx)  # (B, 4U + U): the LSTM's input from the context, the merge's
        z = self._word_gates[tokens] + from_ctx[:, :4 * U]  # (B, 4U)
        z += recurrent
        gates = sigmoid(z)
        c = gates[:, U:2 * U] * c + gates[:, :U] * np.tanh(z[:, 2 * U:3 * U])  # (B, U)
        h = gates[:, 3 * U:] * np.tanh(c)  # (B, U)
        from_h = self._from_new_h(h)  # (B, U + A + E + 4U): this step's merge, the next step's query, gate, recurrent
        merged = from_h[:, :U]
        merged += from_ctx[:, 4 * U:]
        merged += self._merge_b
        np.maximum(merged, 0.0, out=merged)
        logits = self._head(merged)  # (B, V)
        logits += self._head_b
        logits -= logits.max(axis=1, keepdims=True)
        logits -= np.log(np.exp(logits).sum(axis=1, keepdims=True))  # log_softmax
        return logits, (grid, h, c, from_h[:, U:]), alpha

    def step(self, tokens: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        """tokens (B,) int, state -> log_probs (B, V) float32, new state. Decoding's step."""
        log_probs, state, _ = self._step(tokens, state)
        return log_probs, state

    def attention_maps(self, features: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
        """Where the decoder looked for each word: features (N, D), token_ids (N, T) starting with <start> ->
        (N, T-1, cells), row t the weights it gave the cells when it predicted token t+1 (each row sums to 1).
        The same arithmetic as decoding, so a caption's maps are the ones its words were chosen with."""
        inputs, _ = teacher_forcing_pairs(np.asarray(token_ids, dtype=np.int64))
        state = self.initial_state(features)
        out = np.empty((len(inputs), inputs.shape[1], self.config.grid_cells), np.float32)  # (N, T-1, cells)
        for t in range(inputs.shape[1]):
            _, state, out[:, t] = self._step(inputs[:, t], state)
        return out


@register_decoder
class AttentionDecoder(KerasDecoder):
    """The Keras attention model (trained and saved) and its ``AttentionInference`` (what decodes)."""

    kind = "attention"
    inference_class = AttentionInference
    build = staticmethod(build_attention_decoder)

    @classmethod
    def load(cls, path: str, config: DecoderConfig) -> "AttentionDecoder":
        from . import attention_layers  # noqa: F401  (registers its layers for safe-mode loading)

        return super().load(path, config)

    def attention_maps(self, features: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
        return self.inference.attention_maps(features, token_ids)
