import numpy as np
import pytest

from caption_core.decoders import DecoderConfig, MergeDecoder, masked_loss, pad_captions, teacher_forcing_pairs
from caption_core.text import END_ID, START_ID


def test_config_json_round_trip_and_unknown_fields():
    cfg = DecoderConfig(vocab_size=50, feature_dim=8, units=16)
    assert DecoderConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown DecoderConfig fields"):
        DecoderConfig.from_dict({"vocab_size": 5, "feature_dim": 2, "lstm": 3})


def test_pad_and_shift():
    padded = pad_captions([[1, 5, 6, 2], [1, 7, 2]], max_length=10)
    assert padded.tolist() == [[1, 5, 6, 2], [1, 7, 2, 0]]
    assert pad_captions([[1, 5, 6, 7, 8, 2]], max_length=4).tolist() == [[1, 5, 6, 2]]  # <end> kept
    x, y = teacher_forcing_pairs(padded)
    assert x.tolist() == [[1, 5, 6], [1, 7, 2]] and y.tolist() == [[5, 6, 2], [7, 2, 0]]


def test_masked_loss_ignores_padding():
    rng = np.random.default_rng(0)
    targets = np.array([[5, 6, 2, 0, 0]], np.int32)
    logits = rng.normal(size=(1, 5, 10)).astype(np.float32)
    changed = logits.copy()
    changed[:, 3:] = rng.normal(size=(1, 2, 10)) * 100  # garbage at padded steps
    a, b = float(masked_loss(targets, logits)), float(masked_loss(targets, changed))
    assert a == pytest.approx(b, rel=1e-6)
    only = float(masked_loss(targets[:, :3], logits[:, :3]))
    assert a == pytest.approx(only, rel=1e-6)


def test_stepping_matches_teacher_forcing(tiny_parts):
    """Decoding one token at a time with the carried state gives the same probabilities as scoring
    the whole caption at once."""
    _, dec, vocab = tiny_parts
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(2, dec.config.feature_dim)).astype(np.float32)
    tokens = np.array([[START_ID, 5, 6, 7, END_ID], [START_ID, 8, 4, 9, END_ID]], np.int32)
    full = dec.token_log_probs(feats, tokens)  # (2, 4)
    state = dec.initial_state(feats)
    stepped = []
    for t in range(tokens.shape[1] - 1):
        lp, state = dec.step(tokens[:, t], state)
        stepped.append(lp[np.arange(2), tokens[:, t + 1]])
    np.testing.assert_allclose(np.stack(stepped, 1), full, atol=1e-4)


def test_numpy_inference_matches_the_keras_model(tiny_parts):
    """The NumPy decoder (what decodes) gives the Keras training graph's log-probabilities (what is trained)."""
    import tensorflow as tf

    _, dec, _ = tiny_parts
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(3, dec.config.feature_dim)).astype(np.float32)
    tokens = np.array([[START_ID, 5, 6, 7, END_ID], [START_ID, 8, 4, 9, END_ID], [START_ID, 9, 9, 9, 9]], np.int32)
    logits = dec.training_model({"features": feats, "tokens": tokens[:, :-1]}, training=False)
    keras_lp = np.take_along_axis(tf.nn.log_softmax(logits).numpy(), tokens[:, 1:, None], axis=-1)[..., 0]
    np.testing.assert_allclose(dec.token_log_probs(feats, tokens), keras_lp, atol=1e-5)


def test_saved_keras_file_is_read_without_keras(tiny_parts, tmp_path):
    """MergeInference.load reads the .keras file with h5py: the same weights, the same steps."""
    import dataclasses

    from caption_core.decoders import MergeInference

    _, dec, _ = tiny_parts
    path = str(tmp_path / "decoder.keras")
    dec.save(path)
    loaded = MergeInference.load(path, dec.config)
    for name, arrays in dec.layer_weights().items():
        for a, b in zip(arrays, loaded.layer_weights()[name]):
            np.testing.assert_array_equal(a, b)
    feats = np.random.default_rng(3).normal(size=(2, dec.config.feature_dim)).astype(np.float32)
    tokens = np.array([START_ID, 5], np.int64)
    a, _ = dec.step(tokens, dec.initial_state(feats))
    b, _ = loaded.step(tokens, loaded.initial_state(feats))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="do not match the decoder config: .*units|lstm"):
        MergeInference.load(path, dataclasses.replace(dec.config, units=8))
    (tmp_path / "bad.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a Keras 3 .keras file"):
        MergeInference.load(str(tmp_path / "bad.keras"), dec.config)


def test_tiny_decoder_learns_and_loss_falls():
    """A few steps on synthetic features: the caption is a function of the features."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    cfg = DecoderConfig(vocab_size=12, feature_dim=6, embed_dim=16, units=32, feature_dropout=0.0,
                        embed_dropout=0.0, max_length=6)
    dec = MergeDecoder(cfg)
    kind = rng.integers(0, 2, 64)
    feats = (np.eye(6)[kind * 3] + rng.normal(scale=0.1, size=(64, 6))).astype(np.float32)
    caps = np.array([[START_ID, 4, 5, END_ID, 0] if k == 0 else [START_ID, 7, 8, 9, END_ID] for k in kind], np.int32)
    x, y = teacher_forcing_pairs(caps)
    model = dec.training_model
    opt = tf.keras.optimizers.Adam(0.02)
    losses = []
    for _ in range(60):
        with tf.GradientTape() as tape:
            loss = masked_loss(y, model({"features": feats, "tokens": x}, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        losses.append(float(loss))
    assert losses[-1] < 0.2 * losses[0]
    from caption_core.decoding import decode

    dec.refresh()  # NumPy inference reads weights exported from the Keras layers: re-export after training
    out = decode(dec.step, dec.initial_state(feats[:4]), 4, "greedy")
    expect = [[4, 5, END_ID] if k == 0 else [7, 8, 9, END_ID] for k in kind[:4]]
    assert [o[0].tokens for o in out] == expect


@pytest.mark.parametrize("small_kernels", [True, False])
def test_dense_gives_the_gemm_product_for_any_number_of_rows(small_kernels):
    """Both ways Dense multiplies a photo's few beam rows (column blocks for OpenBLAS's small kernels, or
    matrix-vector products on the transposed copy), and one gemm for one row or many: x @ W up to float rounding."""
    from caption_core.decoders.base import Dense

    rng = np.random.default_rng(0)
    for k, n in ((256, 2533), (40, 7), (300, 1000)):
        w = rng.normal(size=(k, n)).astype(np.float32)
        dense = Dense(w, small_kernels=small_kernels)
        for rows in (1, 2, 5, 7, 8, 20, 21, 40):
            x = rng.normal(size=(rows, k)).astype(np.float32)
            got = dense(x)
            assert got.shape == (rows, n) and got.dtype == np.float32
            np.testing.assert_allclose(got, x @ w, rtol=1e-4, atol=1e-3)


def test_small_gemm_kernels_can_be_forced(monkeypatch):
    from caption_core.decoders.base import has_small_gemm_kernels

    for value, expected in (("1", True), ("0", False)):
        monkeypatch.setenv("CAPTION_SMALL_GEMM", value)
        has_small_gemm_kernels.cache_clear()
        assert has_small_gemm_kernels() is expected
    has_small_gemm_kernels.cache_clear()
