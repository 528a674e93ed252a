"""The decoders, by kind (``DecoderConfig.kind``): the merge model here, the attention model in
``caption_core.attention``. The merge decoder: image features and words meet after the LSTM.

    features (B, D) -> Dropout -> Dense(units, relu)                       -> img  (B, U)
    tokens   (B, T) -> Embedding(mask_zero) -> Dropout -> LSTM(U, seq)     -> seq  (B, T, U)
    img[:, None] + seq -> Dense(units, relu) -> Dense(vocab)               -> logits (B, T, V)

The Keras ``training_model`` reads whole captions with teacher forcing (what is trained and saved).
``InferenceDecoder`` runs the same graph in NumPy one word at a time with the LSTM state carried
(what decodes): one small step per word, never re-reading the prefix.

Padding is handled by the loss (``masked_loss`` with explicit sample weights), because Keras
``Add`` drops the Embedding mask.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import re
import zipfile

import numpy as np

from .config import Config


@dataclasses.dataclass(frozen=True)
class DecoderConfig(Config):
    """Kind and sizes of a decoder. Saved in every bundle's manifest."""

    kind: str = "merge"  # 'merge' (pooled features, merged after the LSTM) or 'attention' (over the grid cells)
    vocab_size: int = 0  # number of ids, reserved tokens included (set from the vocabulary when training)
    feature_dim: int = 0  # D: size of the encoder's feature vector (set from the encoder when training)
    embed_dim: int = 256  # word embedding size
    units: int = 256  # LSTM units == image projection size == merge size (U)
    feature_dropout: float = 0.5  # dropout on the image features before the projection
    embed_dropout: float = 0.5  # dropout on word embeddings before the LSTM
    max_length: int = 32  # most tokens in a caption, <start> and <end> included
    # attention kind only:
    grid_cells: int = 0  # N: cells of the encoder's grid (set from the encoder when training)
    context_dim: int = 512  # E: each cell projected to this size (the context vector's size)
    attention_dim: int = 256  # A: size of the attention's hidden layer
    attention_penalty: float = 1.0  # weight of the doubly stochastic penalty (each cell attended ~once a caption)

    def __post_init__(self):
        if self.kind not in DECODER_KINDS:
            raise ValueError(f"unknown decoder kind {self.kind!r}; valid: {list(DECODER_KINDS)}")


DECODER_KINDS = ("merge", "attention")


def decoder_class(kind: str):
    """The Keras-side class of decoder ``kind`` (``build``, ``load``, ``inference``)."""
    if kind == "merge":
        return MergeDecoder
    if kind == "attention":
        from .attention import AttentionDecoder

        return AttentionDecoder
    raise ValueError(f"unknown decoder kind {kind!r}; valid: {list(DECODER_KINDS)}")


def make_decoder(config: DecoderConfig, training_model=None):
    """A new trainable decoder of ``config.kind`` (random weights, or those of ``training_model``)."""
    return decoder_class(config.kind)(config, training_model)


def load_decoder(path: str, config: DecoderConfig):
    """A trainable decoder of ``config.kind`` from its ``.keras`` file (Keras, safe mode)."""
    return decoder_class(config.kind).load(path, config)


def load_inference(path: str, config: DecoderConfig):
    """What decodes: the NumPy step of ``config.kind`` read from a ``.keras`` file with h5py (no Keras import)."""
    return decoder_class(config.kind).inference_class.load(path, config)


def build_decoder(config: DecoderConfig):
    """The Keras training model: inputs ``features`` (B, D) float32, ``tokens`` (B, T) int32 -> logits
    (B, T, V), teacher forcing over whole captions. Decoding runs ``InferenceDecoder`` on its weights."""
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
    return keras.Model({"features": features, "tokens": tokens}, logits, name="merge_decoder")


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


class NumpyDecoder:
    """What every NumPy inference class shares (the merge model's ``InferenceDecoder``, the attention model's
    ``AttentionInference``): read from a ``.keras`` file with h5py, its weights by layer, the BLAS threads for a
    batch, teacher-forced log-probabilities through its own ``initial_state`` and ``step``."""

    _layer_weights: dict
    WHAT = "decoder"  # in error messages

    def _keep(self, config: "DecoderConfig", layer_weights: dict[str, list[np.ndarray]]) -> None:
        """Keep the config and the weights, refusing weights that lack one of the layers in ``LAYERS``."""
        self.config, self._layer_weights = config, layer_weights
        missing = [n for n in self.LAYERS if n not in layer_weights]
        if missing:
            raise ValueError(f"{self.WHAT} weights lack the layers {missing}")

    def _check_shapes(self, expected: dict[str, tuple], got: dict[str, tuple]) -> None:
        """ValueError naming every weight whose shape is not the one the config implies."""
        wrong = {k: (tuple(got[k]), v) for k, v in expected.items() if tuple(got[k]) != v}
        if wrong:
            raise ValueError(f"{self.WHAT} weights do not match the decoder config: " + ", ".join(
                f"{k} is {g}, config says {e}" for k, (g, e) in wrong.items()))

    def layer_weights(self) -> dict[str, list[np.ndarray]]:
        """Layer name -> weight arrays, as loaded (e.g. to copy them into another model)."""
        return self._layer_weights

    @classmethod
    def load(cls, path: str, config: DecoderConfig) -> "NumpyDecoder":
        """From a ``.keras`` file (``KerasDecoder.save``), read with h5py: nothing is unpickled, Keras is not imported."""
        return cls(config, read_keras_weights(path))

    @staticmethod
    def blas_threads(n_images: int):
        """Context for decoding ``n_images`` at once: one BLAS thread below 100 images (500 beam rows).
        A beam step is a few (B, 256) x (256, V) matmuls; OpenBLAS's threads cost more than they save there,
        and while the other core is busy (another request, the encoder) waking them costs milliseconds per
        matmul (benchmarks/RESULTS.md). Large batches keep every thread."""
        return contextlib.nullcontext() if n_images >= 100 else _one_blas_thread()

    def token_log_probs(self, features: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
        return teacher_forced_log_probs(self, features, token_ids)


class InferenceDecoder(NumpyDecoder):
    """The decoder's inference graph in NumPy: what decodes, in the app and everywhere else.

    Decoding calls ``step`` once per word. Through Keras each call paid a fixed overhead (a
    ``tf.function`` call and numpy round trips) far above its arithmetic, so inference runs on the
    trained weights in NumPy: an embedding lookup whose input projection is precomputed for every word,
    one (B, U) x (U, 4U) matmul, the merge and the (B, U) x (U, V) head. The arithmetic is the Keras
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
                    "lstm recurrent kernel": (c.units, 4 * c.units), "feature_projection": (c.feature_dim, c.units),
                    "merge_dense": (c.units, c.units), "logits": (c.units, c.vocab_size)}
        got = {"embedding": emb.shape, "lstm kernel": kernel.shape, "lstm recurrent kernel": recurrent.shape,
               "feature_projection": self._proj_w.shape, "merge_dense": self._merge_w.shape, "logits": self._head_w.shape}
        self._check_shapes(expected, got)
        self._word_gates = f32(f32(emb) @ f32(kernel))  # (V, 4U): each word's input projection, computed once
        self._recurrent = f32(recurrent)  # (U, 4U), gates i, f, c, o
        self._lstm_bias = f32(bias)  # (4U,)

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
        z = self._word_gates[tokens] + h @ self._recurrent  # (B, 4U)
        z += self._lstm_bias
        gates = _sigmoid(z)  # (B, 4U): i, f, (c: unused), o
        c = gates[:, U:2 * U] * c + gates[:, :U] * np.tanh(z[:, 2 * U:3 * U])  # (B, U)
        h = gates[:, 3 * U:] * np.tanh(c)  # (B, U)
        merged = (img + h) @ self._merge_w  # (B, U)
        merged += self._merge_b
        np.maximum(merged, 0.0, out=merged)
        logits = merged @ self._head_w  # (B, V)
        logits += self._head_b
        logits -= logits.max(axis=1, keepdims=True)
        logits -= np.log(np.exp(logits).sum(axis=1, keepdims=True))  # log_softmax
        return logits, (img, h, c)


def teacher_forced_log_probs(decoder, features: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
    """Teacher-forced log-probability of each next token under ``decoder`` (its initial_state and step).

    features (N, D), token_ids (N, T) starting with <start> -> (N, T-1): log p(token[t+1] | ...).
    """
    inputs, targets = teacher_forcing_pairs(np.asarray(token_ids, dtype=np.int64))
    state = decoder.initial_state(features)
    rows = np.arange(len(inputs))
    out = np.empty(targets.shape, np.float32)  # (N, T-1)
    for t in range(inputs.shape[1]):
        log_probs, state = decoder.step(inputs[:, t], state)  # (N, V)
        out[:, t] = log_probs[rows, targets[:, t]]
    return out


class EnsembleDecoder:
    """Several merge decoders over one vocabulary, decoded as one: member ``i`` reads its slice of the
    features (the ``concat`` encoder's members, in order), and each step returns the log of the members' mean
    next-word probability. The state is the members' states side by side in one flat tuple, so every
    decoding strategy reorders it like a single decoder's."""

    def __init__(self, members: list, slices: list[tuple[int, int]]):
        if not members or len(members) != len(slices):
            raise ValueError(f"an ensemble needs one feature slice per member decoder ({len(members)} decoders, "
                             f"{len(slices)} slices)")
        first = members[0].config
        for m, (a, b) in zip(members, slices):
            if m.config.vocab_size != first.vocab_size or m.config.max_length != first.max_length:
                raise ValueError("ensemble members must share the vocabulary and the caption length: "
                                 f"{m.config.vocab_size}/{m.config.max_length} vs {first.vocab_size}/{first.max_length}")
            if b - a != m.config.feature_dim:
                raise ValueError(f"feature slice {a}:{b} does not fit a member that reads {m.config.feature_dim} features")
        self.members, self.slices = members, slices
        self.config = dataclasses.replace(first, feature_dim=max(b for _, b in slices))
        self._sizes = [m.state_arrays for m in members]  # each member's share of the flat state

    blas_threads = staticmethod(NumpyDecoder.blas_threads)

    def initial_state(self, features: np.ndarray) -> tuple:
        x = np.asarray(features, dtype=np.float32)  # (N, D)
        states = [m.initial_state(x[:, a:b]) for m, (a, b) in zip(self.members, self.slices)]
        return tuple(arr for s in states for arr in s)

    def step(self, tokens: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        outs, at = [], 0
        for member, size in zip(self.members, self._sizes):
            outs.append(member.step(tokens, state[at:at + size]))
            at += size
        stacked = np.stack([lp for lp, _ in outs])  # (M, B, V)
        top = stacked.max(axis=0)  # (B, V)
        log_mean = top + np.log(np.exp(stacked - top).mean(axis=0))  # (B, V): log of the mean probability
        return log_mean.astype(np.float32, copy=False), tuple(arr for _, s in outs for arr in s)

    def token_log_probs(self, features: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
        return teacher_forced_log_probs(self, features, token_ids)


class KerasDecoder:
    """A Keras model built by the kind's ``build`` (what is trained and saved), and its NumPy inference copy
    (what decodes: ``step``, ``initial_state``, ``token_log_probs``), exported on first use. The Keras weights
    are the source of truth: ``refresh`` re-exports them after training changes them."""

    kind: str
    inference_class: type
    build = None  # config -> Keras model

    def __init__(self, config: DecoderConfig, training_model=None):
        self.config = config
        self.training_model = type(self).build(config)
        if training_model is not None:
            self.training_model.set_weights(training_model.get_weights())
        self._inference = None

    def layer_weights(self) -> dict[str, list[np.ndarray]]:
        """Layer name -> weight arrays, for the layers inference reads."""
        return {name: [np.asarray(w) for w in self.training_model.get_layer(name).get_weights()]
                for name in self.inference_class.LAYERS}

    def refresh(self) -> None:
        """Re-export the inference weights from the Keras layers; call after training changes them."""
        self._inference = None

    @property
    def inference(self):
        if self._inference is None:
            self._inference = self.inference_class(self.config, self.layer_weights())
        return self._inference

    def save(self, path: str) -> None:
        self.training_model.save(path)

    @classmethod
    def load(cls, path: str, config: DecoderConfig):
        import keras

        trained = keras.saving.load_model(path, compile=False, safe_mode=True)
        return cls(config, training_model=trained)

    # decoding goes through the NumPy copy
    def blas_threads(self, n_images: int):
        return self.inference_class.blas_threads(n_images)

    @property
    def state_arrays(self) -> int:
        return self.inference_class.state_arrays

    def initial_state(self, features: np.ndarray):
        return self.inference.initial_state(features)

    def step(self, tokens: np.ndarray, state: tuple):
        return self.inference.step(tokens, state)

    def token_log_probs(self, features: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
        return self.inference.token_log_probs(features, token_ids)


class MergeDecoder(KerasDecoder):
    """The merge model built by ``build_decoder`` and its ``InferenceDecoder``."""

    kind = "merge"
    inference_class = InferenceDecoder
    build = staticmethod(build_decoder)


def _snake_case(name: str) -> str:
    """Keras' own name for a layer class in a saved file (``keras.src.utils.naming.to_snake_case``)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def read_keras_weights(path: str) -> dict[str, list[np.ndarray]]:
    """Layer name -> weight arrays of a functional model saved as ``.keras`` (Keras 3: a zip of
    ``config.json`` and ``model.weights.h5``), read with h5py. Keras stores each layer under
    ``layers/<class in snake case>[_<n>]``, numbered in the order of the model's layers; the config
    gives that order and the names."""
    import h5py

    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
            weights = z.read("model.weights.h5")
    except (OSError, KeyError, zipfile.BadZipFile, ValueError) as exc:
        raise ValueError(f"'{path}' is not a Keras 3 .keras file: {exc}") from None
    out: dict[str, list[np.ndarray]] = {}
    used: dict[str, int] = {}
    with h5py.File(io.BytesIO(weights), "r") as h5:
        layers = h5.get("layers")
        for layer in config.get("config", {}).get("layers", []):
            key = _snake_case(layer["class_name"])
            used[key] = used.get(key, -1) + 1
            group = layers.get(key if used[key] == 0 else f"{key}_{used[key]}") if layers is not None else None
            if group is None:
                continue
            arrays: list[tuple[tuple, np.ndarray]] = []
            group.visititems(lambda name, obj: arrays.append((_var_key(name), obj[()]))
                             if isinstance(obj, h5py.Dataset) else None)
            out[layer["config"]["name"]] = [a for _, a in sorted(arrays, key=lambda x: x[0])]
    return out


def _var_key(name: str) -> tuple:
    """'cell/vars/10' -> ('cell', 'vars', 10): variables in their saved order."""
    return tuple(int(p) if p.isdigit() else p for p in name.split("/"))


@functools.lru_cache(maxsize=1)
def _blas_libraries() -> tuple:
    """The BLAS libraries loaded in this process (threadpoolctl's controllers), found once."""
    from threadpoolctl import ThreadpoolController

    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


@contextlib.contextmanager
def _one_blas_thread():
    libs = _blas_libraries()
    before = [lib.num_threads for lib in libs]
    for lib in libs:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(libs, before):
            lib.set_num_threads(n)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function (what Keras' LSTM uses for its gates), without overflow warnings."""
    return 0.5 * (np.tanh(0.5 * x) + 1.0)
