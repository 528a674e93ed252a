"""A faithful reimplementation of the classic tutorial pipeline, kept as the benchmark baseline.

It is what the project replaces, written the way the tutorial writes it:
- features: one image at a time, ``model.predict`` on a batch of one;
- training data: a generator that expands every caption into all its prefixes, left-padded to
  the maximum length, with one-hot targets over the whole vocabulary;
- model: the merge model whose LSTM reads the whole padded prefix and returns its last state;
- captioning: re-tokenize the prefix text, ``predict`` once per word, and scan the vocabulary to
  map the predicted id back to a word.
Same vocabulary, sizes and features as the project's side of each comparison.
"""

from __future__ import annotations

import numpy as np

from caption_core.text import END_ID, START_ID, Vocabulary


# -- features ---------------------------------------------------------------------------------
def extract_one_by_one_keras(model, images: list[np.ndarray], preprocess) -> np.ndarray:
    """images: uint8 (S, S, 3) each -> (N, D), one ``model.predict`` per image."""
    out = []
    for img in images:
        x = preprocess(np.expand_dims(img.astype("float32"), axis=0))  # (1, S, S, 3)
        out.append(model.predict(x, verbose=0)[0])
    return np.stack(out)


def extract_one_by_one_torch(torch_model, images: list[np.ndarray]) -> np.ndarray:
    """The same loop for a torch encoder: normalise, NCHW tensor, one forward pass per image."""
    import torch

    out = []
    with torch.no_grad():
        for img in images:
            x = torch.from_numpy(((img.astype("float32") - 127.0) / 128.0).transpose(2, 0, 1)[None].copy())  # (1, 3, S, S)
            fmap = torch_model.extract_features(x)  # (1, C, h, w)
            out.append(fmap.mean(dim=(2, 3))[0].numpy())
    return np.stack(out)


def load_img(path: str, size: int) -> np.ndarray:
    """keras.utils.load_img(path, target_size=(size, size)) + img_to_array, as the tutorial reads a photo."""
    import keras

    return keras.utils.img_to_array(keras.utils.load_img(path, target_size=(size, size))).astype(np.uint8)


# -- training data ----------------------------------------------------------------------------
def texts_to_sequences(vocab: Vocabulary, text: str) -> list[int]:
    """Tokenizer.texts_to_sequences: words known to the vocabulary, unknown ones dropped."""
    return [vocab.word_to_id[w] for w in text.split() if w in vocab.word_to_id]


def pad_left(seqs: list[list[int]], maxlen: int) -> np.ndarray:
    """pad_sequences(..., padding='pre', truncating='pre')."""
    out = np.zeros((len(seqs), maxlen), dtype=np.int32)
    for i, s in enumerate(seqs):
        s = s[-maxlen:]
        if s:
            out[i, -len(s):] = s
    return out


def data_generator(captions_by_image: dict[int, list[str]], features: np.ndarray, vocab: Vocabulary, max_length: int,
                   images_per_batch: int = 1):
    """Yield ([photo (B, D), in_seq (B, L)], one-hot out (B, V)) for every prefix of every caption."""
    V = len(vocab)
    while True:
        X1, X2, y = [], [], []
        n = 0
        for image, caps in captions_by_image.items():
            n += 1
            for cap in caps:
                seq = [START_ID] + texts_to_sequences(vocab, cap) + [END_ID]
                for i in range(1, len(seq)):
                    in_seq = pad_left([seq[:i]], max_length)[0]
                    out = np.zeros(V, dtype=np.float32)  # to_categorical
                    out[seq[i]] = 1.0
                    X1.append(features[image])
                    X2.append(in_seq)
                    y.append(out)
            if n == images_per_batch:
                yield (np.array(X1, np.float32), np.array(X2)), np.array(y)
                X1, X2, y, n = [], [], [], 0


def build_classic_model(vocab_size: int, feature_dim: int, max_length: int, units: int = 256, embed_dim: int = 256):
    import keras
    from keras import layers

    inputs1 = keras.Input((feature_dim,))
    fe2 = layers.Dense(units, activation="relu")(layers.Dropout(0.5)(inputs1))
    inputs2 = keras.Input((max_length,))
    se1 = layers.Embedding(vocab_size, embed_dim, mask_zero=True)(inputs2)
    se3 = layers.LSTM(units)(layers.Dropout(0.5)(se1))  # reads the whole padded prefix
    decoder2 = layers.Dense(units, activation="relu")(layers.Add()([fe2, se3]))
    outputs = layers.Dense(vocab_size, activation="softmax")(decoder2)
    model = keras.Model([inputs1, inputs2], outputs)
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    return model


# -- captioning -------------------------------------------------------------------------------
def word_for_id(integer: int, vocab: Vocabulary) -> str | None:
    """The tutorial's linear scan of the tokenizer's word index."""
    for word, index in vocab.word_to_id.items():
        if index == integer:
            return word
    return None


def generate_desc(model, vocab: Vocabulary, photo: np.ndarray, max_length: int, max_words: int | None = None,
                  call: str = "predict") -> str:
    """The tutorial's loop; ``max_words`` (default ``max_length``) caps the words generated.

    ``call='predict'`` is the tutorial's ``model.predict`` per word (its fixed cost per call included);
    ``call='direct'`` runs the same loop calling the model directly, compiled once (``tf.function`` around
    ``model(x)``; the inputs always have the same shape, so it traces once), which separates that per-call
    overhead from the algorithm (the whole prefix re-read at every word, the vocabulary scan). A plain eager
    ``model(x)`` runs the LSTM op by op and was slower than ``predict`` (2.1x in a smoke run), so it would
    not show what ``predict`` costs."""
    in_text = vocab.id_to_word[START_ID]
    run = (lambda x: model.predict(x, verbose=0)) if call == "predict" else _compiled(model)
    for _ in range(max_words or max_length):
        sequence = [vocab.word_to_id[w] for w in in_text.split() if w in vocab.word_to_id]  # re-tokenize the prefix
        sequence = pad_left([sequence], max_length)
        yhat = run([photo[None], sequence])
        word = word_for_id(int(np.argmax(yhat)), vocab)
        if word is None:
            break
        in_text += " " + word
        if word == vocab.id_to_word[END_ID]:
            break
    return in_text


_COMPILED: dict = {}


def _compiled(model):
    """``model(x)`` as one compiled function per model (cached): a direct call without ``predict``'s machinery."""
    if id(model) not in _COMPILED:
        import tensorflow as tf

        fn = tf.function(lambda a, b: model([a, b], training=False))
        _COMPILED[id(model)] = (model, lambda x: fn(tf.constant(x[0], tf.float32), tf.constant(x[1], tf.int32)).numpy())
    return _COMPILED[id(model)][1]


def copy_weights_from(model, decoder) -> None:
    """Give the classic model our trained decoder's weights (same layers, same sizes), so both
    loops caption with the same model and differ only in how they run it."""
    from keras import layers

    ours = decoder.layer_weights()
    dense = [l for l in model.layers if isinstance(l, layers.Dense)]
    for mine, name in zip(dense, ("feature_projection", "merge_dense", "logits")):
        mine.set_weights(ours[name])
    next(l for l in model.layers if isinstance(l, layers.Embedding)).set_weights(ours["embedding"])
    next(l for l in model.layers if isinstance(l, layers.LSTM)).set_weights(ours["lstm"])
