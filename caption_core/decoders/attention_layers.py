"""Keras layers of the attention decoder, registered serializable so its ``.keras`` files load in safe mode.
Importing this module imports Keras; ``caption_core.decoders.attention`` imports it only to build, train or load a
Keras model (decoding runs on the NumPy copy in ``caption_core.decoders.attention``)."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="caption_core")
class AttentionLSTM(layers.Layer):
    """An LSTM that looks at the grid before each word (Show, Attend and Tell, soft attention).

    Inputs: ``embedded`` (B, T, W) word embeddings, ``values`` (B, N, E) the projected grid cells, ``tokens``
    (B, T) the input ids (only to leave padding and the step after <end> out of the attention penalty). At each step t, from the
    previous state h:

        scores = tanh(values K + b_k + h Q) s                (B, N)
        alpha  = softmax(scores)                             (B, N): where the decoder looks
        ctx    = sigmoid(h G + b_g) * sum_n alpha_n values_n  (B, E): the gated context
        h, c   = LSTM([word, ctx], h, c)                     gates i, f, c, o as Keras' LSTM

    h and c start from the mean cell (tanh of a linear map each). Returns (h_seq (B, T, U), ctx_seq (B, T, E),
    alpha_seq (B, T, N)). With ``training=True`` it adds the doubly stochastic penalty
    ``penalty * sum_n (1 - sum_t alpha_tn)^2`` per caption (each cell attended about once over the
    caption), divided by the caption words in the batch (the cross-entropy's normaliser) through ``add_loss``.
    """

    def __init__(self, units: int, attention_dim: int, penalty: float = 1.0, end_id: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.units, self.attention_dim, self.penalty = int(units), int(attention_dim), float(penalty)
        self.end_id = int(end_id)  # steps reading <end> or padding predict nothing: the penalty leaves them out

    def build(self, input_shapes):
        (_, _, w), (_, _, e), _ = input_shapes
        u, a = self.units, self.attention_dim
        glorot, zeros = "glorot_uniform", "zeros"
        # creation order = saved order = what caption_core.decoders.attention.AttentionInference reads
        self.key_kernel = self.add_weight(shape=(e, a), initializer=glorot, name="key_kernel")
        self.key_bias = self.add_weight(shape=(a,), initializer=zeros, name="key_bias")
        self.query_kernel = self.add_weight(shape=(u, a), initializer=glorot, name="query_kernel")
        self.score = self.add_weight(shape=(a,), initializer="random_normal", name="score")
        self.gate_kernel = self.add_weight(shape=(u, e), initializer=glorot, name="gate_kernel")
        self.gate_bias = self.add_weight(shape=(e,), initializer=zeros, name="gate_bias")
        self.init_h_kernel = self.add_weight(shape=(e, u), initializer=glorot, name="init_h_kernel")
        self.init_h_bias = self.add_weight(shape=(u,), initializer=zeros, name="init_h_bias")
        self.init_c_kernel = self.add_weight(shape=(e, u), initializer=glorot, name="init_c_kernel")
        self.init_c_bias = self.add_weight(shape=(u,), initializer=zeros, name="init_c_bias")
        self.kernel = self.add_weight(shape=(w + e, 4 * u), initializer=glorot, name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(u, 4 * u), initializer="orthogonal", name="recurrent_kernel")
        # Keras' unit_forget_bias: the forget gate starts open
        self.bias = self.add_weight(shape=(4 * u,), name="bias", initializer=lambda shape, dtype=None: ops.concatenate(
            [ops.zeros((u,)), ops.ones((u,)), ops.zeros((2 * u,))]))

    def call(self, inputs, training=False):
        embedded, values, tokens = inputs
        u = self.units
        w = ops.shape(embedded)[-1]
        keys = ops.matmul(values, self.key_kernel) + self.key_bias  # (B, N, A)
        mean = ops.mean(values, axis=1)  # (B, E)
        h0 = ops.tanh(ops.matmul(mean, self.init_h_kernel) + self.init_h_bias)  # (B, U)
        c0 = ops.tanh(ops.matmul(mean, self.init_c_kernel) + self.init_c_bias)  # (B, U)
        word_in = ops.matmul(embedded, self.kernel[:w]) + self.bias  # (B, T, 4U): the words' share, all steps at once
        ctx_kernel = self.kernel[w:]  # (E, 4U)
        batch, cells, e = ops.shape(values)[0], ops.shape(values)[1], ops.shape(values)[2]

        def step(carry, x):  # x (B, 4U)
            h, c, _, _ = carry
            scores = ops.matmul(ops.tanh(keys + ops.expand_dims(ops.matmul(h, self.query_kernel), 1)),
                                ops.expand_dims(self.score, -1))[..., 0]  # (B, N)
            alpha = ops.softmax(scores, axis=-1)  # (B, N)
            ctx = ops.sum(ops.expand_dims(alpha, -1) * values, axis=1)  # (B, E)
            ctx = ops.sigmoid(ops.matmul(h, self.gate_kernel) + self.gate_bias) * ctx  # (B, E)
            z = x + ops.matmul(ctx, ctx_kernel) + ops.matmul(h, self.recurrent_kernel)  # (B, 4U)
            c = ops.sigmoid(z[:, u:2 * u]) * c + ops.sigmoid(z[:, :u]) * ops.tanh(z[:, 2 * u:3 * u])
            h = ops.sigmoid(z[:, 3 * u:]) * ops.tanh(c)
            out = (h, c, ctx, alpha)
            return out, out  # keras.ops.scan (TensorFlow) wants the outputs shaped as the carry

        init = (h0, c0, ops.zeros((batch, e), dtype=values.dtype), ops.zeros((batch, cells), dtype=values.dtype))
        _, (hs, _, ctxs, alphas) = ops.scan(step, init, ops.transpose(word_in, (1, 0, 2)))  # time-major
        hs = ops.transpose(hs, (1, 0, 2))  # (B, T, U)
        ctxs = ops.transpose(ctxs, (1, 0, 2))  # (B, T, E)
        alphas = ops.transpose(alphas, (1, 0, 2))  # (B, T, N)
        if training and self.penalty:
            mask = ops.cast(ops.logical_and(ops.not_equal(tokens, 0), ops.not_equal(tokens, self.end_id)),
                            alphas.dtype)  # (B, T): the steps that predict a word or <end>
            coverage = ops.sum(alphas * ops.expand_dims(mask, -1), axis=1)  # (B, N): attention over the caption
            self.add_loss(self.penalty * ops.sum(ops.square(1.0 - coverage)) / ops.maximum(ops.sum(mask), 1.0))
        return hs, ctxs, alphas

    def compute_output_shape(self, input_shapes):
        (b, t, _), (_, n, e), _ = input_shapes
        return (b, t, self.units), (b, t, e), (b, t, n)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "attention_dim": self.attention_dim,
                "penalty": self.penalty, "end_id": self.end_id}
