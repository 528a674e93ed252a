"""Ensembles: the concat encoder, the ensemble decoder, their bundle, and the training command."""

import os

import numpy as np
import pytest

from caption_core.decoders import DecoderConfig, EnsembleDecoder, MergeDecoder
from caption_core.decoding import decode


def tiny_decoders(vocab_size=9, dims=(4, 6), seed=0):
    import keras

    out = []
    for i, d in enumerate(dims):
        keras.utils.set_random_seed(seed + i)
        out.append(MergeDecoder(DecoderConfig(vocab_size=vocab_size, feature_dim=d, embed_dim=8, units=8, max_length=7)))
    return out


def test_ensemble_step_is_the_log_of_the_mean_probability():
    a, b = tiny_decoders()
    ens = EnsembleDecoder([a, b], [(0, 4), (4, 10)])
    assert ens.config.feature_dim == 10 and ens.config.vocab_size == 9
    feats = np.random.default_rng(0).normal(size=(3, 10)).astype(np.float32)
    tokens = np.array([1, 4, 5])
    lp_a, _ = a.step(tokens, a.initial_state(feats[:, :4]))
    lp_b, _ = b.step(tokens, b.initial_state(feats[:, 4:]))
    lp, state = ens.step(tokens, ens.initial_state(feats))
    np.testing.assert_allclose(lp, np.log((np.exp(lp_a) + np.exp(lp_b)) / 2), atol=1e-5)
    np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, atol=1e-5)
    assert len(state) == 6 and all(s.shape[0] == 3 for s in state)  # flat: every strategy reorders its rows

    same = EnsembleDecoder([a, a], [(0, 4), (0, 4)])  # one decoder twice is that decoder
    for strategy in ("greedy", "beam", "diverse_beam"):
        one = decode(a.step, a.initial_state(feats[:, :4]), 3, strategy)
        two = decode(same.step, same.initial_state(feats), 3, strategy)
        assert [[h.tokens for h in r] for r in one] == [[h.tokens for h in r] for r in two]


def test_members_of_different_vocabularies_are_decoded_over_their_union():
    from caption_core.decoders.ensemble import member_ids, union_vocabulary
    from caption_core.text import UNK_ID, Vocabulary

    va = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "dog", "runs", "on", "grass"])
    vb = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "giraffe", "dog", "eats"])
    union = union_vocabulary([va, vb])
    assert union.id_to_word == va.id_to_word + ["giraffe", "eats"]  # the larger's ids kept, the others' words after
    ids_b = member_ids(union, vb)
    assert ids_b.tolist() == [0, 1, 2, 3, 4, 6, -1, -1, -1, 5, 7]
    a, = tiny_decoders(vocab_size=len(va), dims=(4,))
    b, = tiny_decoders(vocab_size=len(vb), dims=(6,), seed=1)
    ids_a = member_ids(union, va)
    assert ids_a.tolist() == list(range(9)) + [-1, -1]
    with pytest.raises(ValueError, match="a member of 9 words in an ensemble of 11"):
        EnsembleDecoder([a, b], [(0, 4), (4, 10)], [None, ids_b])
    ens = EnsembleDecoder([a, b], [(0, 4), (4, 10)], [ids_a, ids_b])
    assert ens.config.vocab_size == len(union) == 11
    feats = np.random.default_rng(0).normal(size=(3, 10)).astype(np.float32)
    tokens = np.array([union.word_to_id["dog"], union.word_to_id["giraffe"], union.word_to_id["grass"]])
    # each member reads its own id of each word, <unk> for a word it lacks (a: giraffe; b: grass)
    lp_a, _ = a.step(np.array([va.word_to_id["dog"], UNK_ID, va.word_to_id["grass"]]), a.initial_state(feats[:, :4]))
    lp_b, _ = b.step(np.array([vb.word_to_id["dog"], vb.word_to_id["giraffe"], UNK_ID]), b.initial_state(feats[:, 4:]))
    lp, _ = ens.step(tokens, ens.initial_state(feats))
    p_a = np.zeros((3, 11))
    p_a[:, :9] = np.exp(lp_a)
    p_b = np.zeros((3, 11))
    p_b[:, ids_b >= 0] = np.exp(lp_b)[:, ids_b[ids_b >= 0]]
    np.testing.assert_allclose(np.exp(lp), (p_a + p_b) / 2, atol=1e-6)  # a word one member lacks: 0 from it
    np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, atol=1e-5)
    weighted = EnsembleDecoder([a, b], [(0, 4), (4, 10)], [ids_a, ids_b], weights=[3, 1])
    lp_w, _ = weighted.step(tokens, weighted.initial_state(feats))
    np.testing.assert_allclose(np.exp(lp_w), 0.75 * p_a + 0.25 * p_b, atol=1e-6)
    assert weighted.weights == [0.75, 0.25]
    with pytest.raises(ValueError, match="one positive number per member"):
        EnsembleDecoder([a, b], [(0, 4), (4, 10)], [ids_a, ids_b], weights=[1, 0])
    with pytest.raises(ValueError, match="word ids must map the ensemble's 11 words"):
        EnsembleDecoder([a, b], [(0, 4), (4, 10)], [ids_a, ids_b[:5]])
    # members of one vocabulary are summed in it, then spread over the union once: the same mean
    c, = tiny_decoders(vocab_size=len(vb), dims=(4,), seed=2)
    lp_c, _ = c.step(np.array([vb.word_to_id["dog"], vb.word_to_id["giraffe"], UNK_ID]), c.initial_state(feats[:, :4]))
    p_c = np.zeros((3, 11))
    p_c[:, ids_b >= 0] = np.exp(lp_c)[:, ids_b[ids_b >= 0]]
    three = EnsembleDecoder([b, a, c], [(4, 10), (0, 4), (0, 4)], [ids_b, ids_a, ids_b], weights=[1, 2, 1])
    assert [g[0] for g in three._groups] == [[0, 2], [1]]
    lp_3, _ = three.step(tokens, three.initial_state(feats))
    np.testing.assert_allclose(np.exp(lp_3), 0.25 * p_b + 0.5 * p_a + 0.25 * p_c, atol=1e-6)


def test_ensemble_members_must_fit():
    a, _ = tiny_decoders()
    (other,) = tiny_decoders(vocab_size=11, dims=(4,))
    with pytest.raises(ValueError, match="share the vocabulary"):
        EnsembleDecoder([a, other], [(0, 4), (4, 8)])
    with pytest.raises(ValueError, match="does not fit a member that reads 4 features"):
        EnsembleDecoder([a], [(0, 5)])


@pytest.fixture(scope="module")
def lite_pair():
    from caption_core.encoders import build_encoder

    return [build_encoder("efficientnet_lite0", {"precision": "float32"}),
            build_encoder("efficientnet_lite1", {"precision": "float32"})]


def test_concat_encoder_is_its_members_side_by_side(lite_pair):
    from PIL import Image

    from caption_core.encoders import build_encoder

    lite0, lite1 = lite_pair
    members = ({"name": "efficientnet_lite0", "config": {"precision": "float32"}},
               {"name": "efficientnet_lite1", "config": {}})
    enc = build_encoder("concat", {"members": members, "precision": "float32"})
    assert enc.input_size == 224 and enc.output_dim == 2560 and enc.slices == [(0, 1280), (1280, 2560)]
    assert enc.members[1].precision == "float32"  # the override reached the member
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8))
    # a photo at the smallest member size: each member sees exactly what it sees alone
    np.testing.assert_allclose(enc.encode([photo]), np.concatenate([lite0.encode([photo]), lite1.encode([photo])], 1),
                               atol=1e-5)
    np.testing.assert_allclose(enc.imagenet_logits(enc.encode([photo])), lite0.classify(lite0.preprocess([photo])),
                               atol=1e-3)
    swapped = build_encoder("concat", {"members": members[::-1], "precision": "float32"})
    assert swapped.weights_fingerprint() != enc.weights_fingerprint()  # order is part of what the decoders read
    twice = build_encoder("concat", {"members": (members[0], members[0]), "precision": "float32"})
    calls = []
    for m in twice.members:  # two members of one config (two decoders reading Lite0): one pass computes both
        m.encode_arrays = (lambda f: lambda x: calls.append(1) or f(x))(m.encode_arrays)
    feats = twice.encode([photo])
    assert len(calls) == 1 and feats.shape == (1, 2560)
    np.testing.assert_allclose(feats[:, :1280], feats[:, 1280:])
    np.testing.assert_allclose(feats[:, :1280], lite0.encode([photo]), atol=1e-5)
    with pytest.raises(ValueError, match="needs at least one member"):
        build_encoder("concat", {"members": ()})
    with pytest.raises(ValueError, match="a concat member is"):
        build_encoder("concat", {"members": ({"encoder": "xception"},)})


def test_an_ensemble_bundle_round_trips_and_its_command_checks_members(tmp_path, lite_pair):
    from caption_core.bundle import BundleError, load_bundle, save_bundle
    from caption_core.captioner import Captioner
    from caption_core.text import Vocabulary, clean_caption
    from training.ensemble import assemble

    vocab = Vocabulary.build([clean_caption(c) for c in ["a dog runs", "a cat sits on a mat", "two dogs play"]])
    decoders = tiny_decoders(vocab_size=len(vocab), dims=(1280, 1280))
    folders = []
    for i, (enc, dec) in enumerate(zip(lite_pair, decoders)):
        folders.append(str(tmp_path / f"member{i}"))
        save_bundle(folders[-1], encoder=enc, decoder=dec, vocab=vocab,
                    default_decoding={"strategy": "beam", "options": {"beam_width": 2}})
    captioner, manifests = assemble(folders)
    assert [m["name"] for m in manifests] == ["member0", "member1"]
    photos = [np.random.default_rng(i).integers(0, 255, (60, 80, 3), dtype=np.uint8) for i in range(2)]
    expected = [r.captions[0].text for r in captioner.caption(photos)]

    folder = str(tmp_path / "ens")
    save_bundle(folder, encoder=captioner.encoder, decoder=captioner.decoder, vocab=vocab,
                default_decoding=captioner.manifest["default_decoding"])
    assert sorted(f for f in os.listdir(folder) if f.endswith(".keras")) == ["decoder_0.keras", "decoder_1.keras"]
    again = Captioner.from_bundle(folder)
    assert isinstance(again.decoder, EnsembleDecoder) and again.encoder.name == "concat"
    assert [r.captions[0].text for r in again.caption(photos)] == expected
    shared = {}  # a server holding the members and the ensemble keeps one copy of each network
    alone = [Captioner.from_bundle(f, shared_encoders=shared) for f in folders]
    both = Captioner.from_bundle(folder, shared_encoders=shared)
    assert [m is a.encoder for m, a in zip(both.encoder.members, alone)] == [True, True] and len(shared) == 2
    assert [r.captions[0].text for r in both.caption(photos)] == expected

    other = Vocabulary.build([clean_caption(c) for c in ["a bird flies", "a horse runs"]])
    odd = str(tmp_path / "odd")
    (dec,) = tiny_decoders(vocab_size=len(other), dims=(1280,))
    save_bundle(odd, encoder=lite_pair[0], decoder=dec, vocab=other)
    mixed, _ = assemble([folders[0], odd])  # two vocabularies: decoded over their union, referred to as bundles only
    assert {"bird", "dog"} <= set(mixed.vocab.id_to_word)
    with pytest.raises(BundleError, match="refers to its members as bundles"):
        save_bundle(str(tmp_path / "mixed"), encoder=mixed.encoder, decoder=mixed.decoder, vocab=mixed.vocab)
    with pytest.raises(ValueError, match="two or more"):
        assemble(folders[:1])

    from training.scst import SCSTConfig, scst_bundle

    with pytest.raises(ValueError, match="is an ensemble: run SCST on its member bundles"):
        scst_bundle(folder, SCSTConfig(), "unused")
    os.remove(os.path.join(folder, "decoder_1.keras"))
    with pytest.raises(BundleError, match="'decoder_1.keras' is missing"):
        load_bundle(folder)


def test_the_ensemble_command_scores_and_writes_a_bundle(tmp_path, lite_pair):
    from caption_core.bundle import read_manifest, save_bundle
    from caption_core.captioner import Captioner
    from caption_core.text import Vocabulary, clean_caption
    from helpers import make_flickr
    from training.__main__ import main

    data = make_flickr(tmp_path / "flickr", per_split=(4, 2, 3), bad=False)
    vocab = Vocabulary.build([clean_caption(c) for c in ["a red square", "a blue square", "a green square"]])
    folders = []
    for i, (enc, dec) in enumerate(zip(lite_pair, tiny_decoders(vocab_size=len(vocab), dims=(1280, 1280)))):
        folders.append(str(tmp_path / "weights" / f"m{i}"))
        save_bundle(folders[-1], encoder=enc, decoder=dec, vocab=vocab)
    assert main(["ensemble", *folders, "--name", "both", "--out", str(tmp_path / "weights"), "--dataset", data,
                 "--cache", str(tmp_path / "cache"), "--weights", "1", "3"]) == 0
    manifest = read_manifest(str(tmp_path / "weights" / "both"))
    assert manifest["decoder"]["weights"] == [0.25, 0.75] and "weighted" in manifest["training"]["combination"]
    assert [m["bundle"] for m in manifest["training"]["ensemble"]] == ["m0", "m1"]
    scores = next(iter(manifest["metrics"].values()))
    assert set(scores) == {"greedy", "beam"} and scores["beam"]["images"] == 3
    assert manifest["encoder"]["name"] == "concat" and len(manifest["decoder"]["members"]) == 2
    card = open(tmp_path / "weights" / "both" / "README.md").read()
    assert "An ensemble of 2 bundles" in card and "| m0 | efficientnet_lite0 |" in card
    Captioner.from_bundle(str(tmp_path / "weights" / "both"))  # loads, fingerprints checked


def test_an_ensemble_refers_to_its_member_bundles_instead_of_copying_them(tmp_path, lite_pair, monkeypatch):
    from caption_core.bundle import BundleError, load_bundle, read_manifest, resolve_bundle, save_bundle
    from caption_core.captioner import Captioner
    from caption_core.text import Vocabulary, clean_caption
    from training.ensemble import assemble

    vocab = Vocabulary.build([clean_caption(c) for c in ["a dog runs", "a cat sits on a mat", "two dogs play"]])
    weights = tmp_path / "weights"
    folders = []
    for i, (enc, dec) in enumerate(zip(lite_pair, tiny_decoders(vocab_size=len(vocab), dims=(1280, 1280)))):
        folders.append(str(weights / f"m{i}"))
        save_bundle(folders[-1], encoder=enc, decoder=dec, vocab=vocab)
    captioner, _ = assemble(folders)
    photos = [np.random.default_rng(i).integers(0, 255, (60, 80, 3), dtype=np.uint8) for i in range(2)]
    expected = [r.captions[0].text for r in captioner.caption(photos, detect=False)]
    folder = save_bundle(str(weights / "both"), encoder=captioner.encoder, decoder=captioner.decoder, vocab=vocab,
                         member_bundles=folders)
    assert not [f for f in os.listdir(folder) if f.endswith(".keras")]  # nothing copied
    members = read_manifest(folder)["decoder"]["members"]
    assert [(m["bundle"], m["file"]) for m in members] == [("m0", "decoder.keras"), ("m1", "decoder.keras")]
    assert members[0]["sha256"] == read_manifest(folders[0])["files"]["decoder.keras"]
    assert [r.captions[0].text for r in Captioner.from_bundle(folder).caption(photos, detect=False)] == expected

    # from the Hub: the repository holds the ensemble and its members side by side, and they come along
    monkeypatch.setattr("caption_core.hub.snapshot", lambda repo_id, **kw: str(weights))
    assert resolve_bundle("hf://someone/captions/both") == os.path.join(str(weights), "both")
    assert [r.captions[0].text for r in Captioner.from_bundle("hf://someone/captions/both").caption(
        photos, detect=False)] == expected

    with pytest.raises(BundleError, match="must sit beside it"):
        save_bundle(str(tmp_path / "elsewhere" / "both"), encoder=captioner.encoder, decoder=captioner.decoder,
                    vocab=vocab, member_bundles=folders)
    os.rename(folders[1], str(weights / "gone"))
    with pytest.raises(BundleError, match="its member 'm1' must sit beside it"):
        load_bundle(folder)
    os.rename(str(weights / "gone"), folders[1])
    save_bundle(folders[1], encoder=lite_pair[1], decoder=tiny_decoders(vocab_size=len(vocab), dims=(1280,))[0],
                vocab=vocab)  # m1 retrained: not the decoder the ensemble was made of
    with pytest.raises(BundleError, match="member bundle 'm1': its decoder.keras is not the one ensemble 'both' was made of"):
        load_bundle(folder)


def test_compact_halves_old_bundles_and_turns_copied_members_into_references(tmp_path, lite_pair):
    from caption_core.bundle import read_manifest, save_bundle, verify_bundle
    from caption_core.captioner import Captioner
    from caption_core.decoders import weights_storage
    from caption_core.text import Vocabulary, clean_caption
    from training.__main__ import main
    from training.ensemble import assemble

    vocab = Vocabulary.build([clean_caption(c) for c in ["a dog runs", "a cat sits on a mat", "two dogs play"]])
    weights = tmp_path / "weights"
    folders = []
    for i, (enc, dec) in enumerate(zip(lite_pair, tiny_decoders(vocab_size=len(vocab), dims=(1280, 1280)))):
        folders.append(str(weights / f"m{i}"))
        save_bundle(folders[-1], encoder=enc, decoder=dec, vocab=vocab, storage="float32")  # as bundles were
    captioner, _ = assemble(folders)
    old = save_bundle(str(weights / "both"), encoder=captioner.encoder, decoder=captioner.decoder, vocab=vocab,
                      storage="float32")  # members copied, as ensembles were
    photos = [np.random.default_rng(i).integers(0, 255, (60, 80, 3), dtype=np.uint8) for i in range(2)]
    before = [r.captions[0] for r in Captioner.from_bundle(old).caption(photos, detect=False)]
    assert sorted(f for f in os.listdir(old) if f.endswith(".keras")) == ["decoder_0.keras", "decoder_1.keras"]

    assert main(["compact", old, *folders]) == 0  # the ensemble first on the command line: members are done first
    assert all(weights_storage(os.path.join(f, "decoder.keras")) == "float16" for f in folders)
    assert not [f for f in os.listdir(old) if f.endswith(".keras")]
    m = read_manifest(old)
    assert [e["bundle"] for e in m["decoder"]["members"]] == ["m0", "m1"] and m["compacted"]["bytes_saved"] > 0
    assert read_manifest(folders[0])["decoder"]["storage"] == "float16"
    verify_bundle(old)
    after = [r.captions[0] for r in Captioner.from_bundle(old).caption(photos, detect=False)]
    assert [c.text for c in after] == [c.text for c in before]  # float16 storage: the same captions here
    np.testing.assert_allclose([c.score for c in after], [c.score for c in before], atol=5e-3)
    assert main(["compact", old, *folders]) == 0  # nothing more to do: unchanged
    assert read_manifest(old) == m

    lonely = tmp_path / "alone"
    save_bundle(str(lonely / "both"), encoder=captioner.encoder, decoder=captioner.decoder, vocab=vocab)
    from training.compact import compact

    with pytest.raises(ValueError, match="no bundle beside it holds the weights of decoder_0.keras"):
        compact([str(lonely / "both")])
    assert main(["compact", str(lonely / "both")]) == 2  # the command says so and fails


def test_an_ensemble_over_two_vocabularies_refers_to_each_members_own(tmp_path, lite_pair):
    from caption_core.bundle import BundleError, load_bundle, read_manifest, save_bundle
    from caption_core.captioner import Captioner
    from caption_core.text import Vocabulary, clean_caption
    from training.ensemble import assemble

    weights = tmp_path / "weights"
    vocabs = [Vocabulary.build([clean_caption(c) for c in texts]) for texts in
              (["a dog runs", "a cat sits on a mat", "two dogs play"], ["a giraffe eats", "a dog runs on grass"])]
    folders = []
    for i, (enc, vocab) in enumerate(zip(lite_pair, vocabs)):
        (dec,) = tiny_decoders(vocab_size=len(vocab), dims=(1280,), seed=i)
        folders.append(str(weights / f"m{i}"))
        save_bundle(folders[-1], encoder=enc, decoder=dec, vocab=vocab)
    captioner, _ = assemble(folders, weights=[2, 1])
    assert set(captioner.vocab.id_to_word) == set(vocabs[0].id_to_word) | set(vocabs[1].id_to_word)
    photos = [np.random.default_rng(i).integers(0, 255, (60, 80, 3), dtype=np.uint8) for i in range(2)]
    expected = [r.captions[0] for r in captioner.caption(photos, strategy="beam", detect=False)]
    folder = save_bundle(str(weights / "both"), encoder=captioner.encoder, decoder=captioner.decoder,
                         vocab=captioner.vocab, member_bundles=folders)
    members = read_manifest(folder)["decoder"]["members"]
    assert ["vocabulary" in m for m in members] == [True, True]  # each lacks some of the union's words
    assert read_manifest(folder)["decoder"]["weights"] == pytest.approx([2 / 3, 1 / 3])
    again = Captioner.from_bundle(folder)
    assert again.vocab.id_to_word == captioner.vocab.id_to_word and again.decoder.weights == captioner.decoder.weights
    got = [r.captions[0] for r in again.caption(photos, strategy="beam", detect=False)]
    assert [c.text for c in got] == [c.text for c in expected]
    np.testing.assert_allclose([c.score for c in got], [c.score for c in expected], atol=1e-6)

    with open(os.path.join(folders[1], "vocab.json"), "a", encoding="utf-8") as f:
        f.write(" ")  # the member's vocabulary altered: its ids would no longer be the decoder's
    with pytest.raises(BundleError, match="member bundle 'm1': its vocab.json is not the one ensemble 'both' was made"):
        load_bundle(folder)


def test_on_an_unfamiliar_scene_the_object_word_members_read_the_words_alone():
    import keras

    from caption_core.decoders.ensemble import SceneConfig

    tags = ("coco:person", "coco:dog", "coco:sink", "imagenet:cup")
    (a,) = tiny_decoders(dims=(4,))
    keras.utils.set_random_seed(5)
    w = MergeDecoder(DecoderConfig(vocab_size=9, feature_dim=6, embed_dim=8, units=8, max_length=7, object_words=tags))
    scenes = SceneConfig(share=0.6, familiar=("coco:person", "coco:dog", "imagenet:cup"))
    assert SceneConfig.from_json(scenes.to_json()) == scenes
    ens = EnsembleDecoder([a, w], [(0, 4), (4, 10)], scenes=scenes)
    plain = EnsembleDecoder([a, w], [(0, 4), (4, 10)])
    feats = np.random.default_rng(0).normal(size=(4, 10)).astype(np.float32)
    # a person and a sink (familiar), a sink alone (unfamiliar), the classifier's cup alone (nothing detected),
    # nothing; and then a sink the classifier calls a cup (familiar)
    words = np.array([[1, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], np.float32)
    x = np.concatenate([feats, words], axis=1)  # (N, D + W)
    assert ens.unfamiliar(words).tolist() == [False, True, False, False]
    assert ens.unfamiliar(np.array([[0, 0, 1, 1]])).tolist() == [False]
    assert not plain.unfamiliar(words).any()
    tokens = np.array([1, 4, 5, 6])
    lp, state = ens.step(tokens, ens.initial_state(x))
    lp_plain, _ = plain.step(tokens, plain.initial_state(x))
    np.testing.assert_allclose(lp[[0, 2, 3]], lp_plain[[0, 2, 3]], atol=1e-6)  # elsewhere: the plain mean
    lp_a, _ = a.step(tokens[1:2], a.initial_state(feats[1:2, :4]))
    blind = np.concatenate([np.zeros((1, 6), np.float32), words[1:2]], axis=1)  # no photo, the words
    lp_w, _ = w.step(tokens[1:2], w.initial_state(blind))
    np.testing.assert_allclose(np.exp(lp[1:2]), 0.4 * np.exp(lp_a) + 0.6 * np.exp(lp_w), atol=1e-6)
    assert len(state) == plain.state_arrays + 1 == ens.state_arrays and state[-1].shape == (4, 2)
    # every strategy reorders each row's weights with its beam: a photo's captions are those it gets alone
    for strategy in ("greedy", "beam", "diverse_beam"):
        together = decode(ens.step, ens.initial_state(x), 4, strategy)
        alone = [decode(ens.step, ens.initial_state(x[i:i + 1]), 1, strategy)[0] for i in range(4)]
        assert [[h.tokens for h in r] for r in together] == [[h.tokens for h in r] for r in alone]
    with pytest.raises(ValueError, match="must be ones the members read: \\['coco:giraffe'\\]; valid: \\['coco:person'"):
        EnsembleDecoder([a, w], [(0, 4), (4, 10)], scenes=SceneConfig(share=0.5, familiar=("coco:giraffe",)))
    with pytest.raises(ValueError, match="members that read object words and members that do not: 0 of 2"):
        EnsembleDecoder([a, a], [(0, 4), (0, 4)], scenes=SceneConfig(share=0.5))
    with pytest.raises(ValueError, match="in \\[0, 1\\)"):
        SceneConfig(share=1.0)
    assert EnsembleDecoder([a, w], [(0, 4), (4, 10)], scenes=SceneConfig(share=0.0)).scenes is None  # 0: off


def test_familiar_object_words_are_those_the_training_captions_name_often():
    from caption_core.object_words import ObjectWords
    from caption_core.text import Vocabulary, clean_caption
    from training.ensemble import familiar_tags

    captions = ["A dog runs on the grass .", "Two dogs play", "A man rides a bike", "A woman sits", "A cat sleeps"]
    vocab = Vocabulary.build([clean_caption(c) for c in captions])
    words = ObjectWords(("coco:person", "coco:dog", "coco:bicycle", "coco:cat", "coco:giraffe", "imagenet:dog"), vocab)
    # person 3 of 5, dog 2 (the detector's and the classifier's word), bicycle and cat 1, giraffe none
    assert familiar_tags(captions, words, 0.4) == ("coco:person", "coco:dog", "imagenet:dog")
    assert familiar_tags(captions, words, 0.2) == ("coco:person", "coco:dog", "coco:bicycle", "coco:cat", "imagenet:dog")
    with pytest.raises(ValueError, match="none given"):
        familiar_tags([], words, 0.1)


def test_the_ensemble_command_writes_what_object_word_members_do_on_unfamiliar_scenes(tmp_path, lite_pair,
                                                                                        monkeypatch, capsys):
    import keras

    from caption_core import detectors
    from caption_core.bundle import read_manifest, save_bundle
    from caption_core.captioner import Captioner
    from caption_core.decoders.ensemble import SceneConfig
    from caption_core.detectors import Detection, Objects
    from caption_core.formatting import object_words_md
    from caption_core.text import Vocabulary, clean_caption
    from helpers import make_flickr
    from training.__main__ import main

    tiny = detectors.build_detector("coco_ssd", {"weights": "random", "width": 0.25})
    monkeypatch.setitem(detectors._SHARED, "detector", tiny)  # the process's detector: a tiny random copy
    data = make_flickr(tmp_path / "flickr", per_split=(4, 2, 3), bad=False)
    vocab = Vocabulary.build([clean_caption(c) for c in ["a red square", "a blue square", "a giraffe", "a person"]])
    (plain,) = tiny_decoders(vocab_size=len(vocab), dims=(1280,))
    keras.utils.set_random_seed(3)
    reads = MergeDecoder(DecoderConfig(vocab_size=len(vocab), feature_dim=1280, embed_dim=8, units=8, max_length=7,
                                       object_words=("coco:person", "coco:giraffe")))
    folders = []
    for i, (enc, dec) in enumerate(zip(lite_pair, (plain, reads))):
        folders.append(str(tmp_path / "weights" / f"m{i}"))
        save_bundle(folders[-1], encoder=enc, decoder=dec, vocab=vocab)
    assert main(["ensemble", *folders, "--name", "scenes", "--out", str(tmp_path / "weights"), "--dataset", data,
                 "--cache", str(tmp_path / "cache"), "--scene-share", "0.6", "--familiar-min-share", "0.3"]) == 0
    from training.ensemble import build_ensemble

    with pytest.raises(ValueError, match="needs a member that reads object words"):
        build_ensemble([folders[0], folders[0]], "none", data, out=str(tmp_path / "weights"),
                       cache=str(tmp_path / "cache"), scene_share=0.5)
    folder = str(tmp_path / "weights" / "scenes")
    manifest = read_manifest(folder)
    # the squares' captions name no COCO category often: nothing is familiar, anything detected is unfamiliar
    assert manifest["decoder"]["scenes"] == {"share": 0.6, "familiar": []}
    assert manifest["training"]["familiar_min_share"] == 0.3 and "words alone" in manifest["training"]["combination"]
    captioner = Captioner.from_bundle(folder, detector=tiny)
    assert captioner.decoder.scenes == SceneConfig(share=0.6, familiar=())
    giraffe = Objects((Detection("giraffe", 0.9, (0, 0, 1, 1)),))
    from PIL import Image

    batch = captioner.encoder.preprocess([Image.fromarray(np.zeros((30, 30, 3), np.uint8))] * 2)
    alone, seen = captioner.caption_arrays(batch, strategy="greedy", objects=[giraffe, None], maps=False)
    assert alone.words_alone and alone.object_words == ["coco:giraffe"] and not seen.words_alone
    assert "wrote from these words alone" in object_words_md(alone.object_words, alone.words_alone)
    assert "wrote from these words alone" not in object_words_md(seen.object_words, seen.words_alone)
    # guide_unseen bans the people the detector did not find on an unfamiliar scene only: a chair (no word these
    # members read) is an object scene the bundle does not call unfamiliar
    chair = Objects((Detection("chair", 0.9, (0, 0, 1, 1)),))
    probs = np.full((3, 1000), 1e-3, np.float32)  # the classifier requires nothing
    assert captioner.unfamiliar(probs, [giraffe, chair, None]).tolist() == [True, False, False]
    _, opts = captioner.decoding("guided", guide_unseen=True, guide_threshold=1.0, guide_detector=0.5)
    g = captioner.guide(probs, opts, [giraffe, chair, None])
    assert "person" in g[0].unseen_words and g[1] is None and g[2] is None
    assert Captioner.from_bundle(folders[0], detector=tiny).unfamiliar(probs, [giraffe, chair, None]) is None
    # the command line's JSON says which words it read, and whether without the photo
    import json

    from caption_core.__main__ import main as caption_main

    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(tmp_path / "photo.png")
    capsys.readouterr()
    assert caption_main([str(tmp_path / "photo.png"), "--bundle", folder, "--json", "--strategy", "greedy"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert isinstance(line["object_words"], list) and line["words_alone"] is False
