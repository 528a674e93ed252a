"""The batch command: sources, rows, resume after a kill, bad photos as error rows, Parquet, Hugging Face datasets,
and the Ray Data engine (a local Ray on a few photos) against the local one."""

import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from caption_core.batch import BatchConfig, HubImages, done_ids, list_photos, main, read_rows, run_batch
from caption_core.batch_io import ParquetWriter


@pytest.fixture(scope="module")
def lite_bundle(tmp_path_factory, tiny_parts):
    """EfficientNet-Lite0 (real weights, torch) with a tiny random merge decoder: loads without TensorFlow."""
    from caption_core.bundle import save_bundle
    from caption_core.decoders import DecoderConfig, MergeDecoder
    from caption_core.encoders import build_encoder

    _, _, vocab = tiny_parts
    enc = build_encoder("efficientnet_lite0", {"precision": "float32", "batch_size": 4})
    dec = MergeDecoder(DecoderConfig(vocab_size=len(vocab), feature_dim=1280, embed_dim=16, units=16, max_length=8))
    return save_bundle(str(tmp_path_factory.mktemp("bundle") / "lite"), encoder=enc, decoder=dec, vocab=vocab)


def photo_folder(root, n=12, bad=(3, 8)):
    """``n`` photos in two sub-folders; the ``bad`` ones are corrupt (text, and a JPEG cut in half)."""
    rng = np.random.default_rng(1)
    for i in range(n):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"p{i:02d}.jpg"
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(path, quality=90)
        if i == bad[0]:
            path.write_bytes(b"not a jpeg at all")
        elif i == bad[1]:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 3])
    (root / "notes.txt").write_text("not a photo: not listed (extension)")
    return root


def cfg(bundle, **kw):
    return BatchConfig(bundle=bundle, strategy="beam", options={"beam_width": 2, "num_return": 2}, batch_size=5, **kw)


def by_id(output):
    return {r["image_id"]: r for r in read_rows(output)}


def test_sources_folder_glob_list_and_file(tmp_path):
    root = photo_folder(tmp_path / "photos")
    photos = list_photos([str(root)])
    assert [p.image_id for p in photos][:3] == ["a/p01.jpg", "a/p03.jpg", "a/p05.jpg"]
    assert len(photos) == 12 and all(os.path.isabs(p.path) for p in photos)
    globbed = list_photos([str(root / "b" / "*.jpg")])
    assert len(globbed) == 6 and globbed[0].image_id.endswith("b/p00.jpg")
    (tmp_path / "list.txt").write_text("# two photos\nphotos/a/p01.jpg\n\nphotos/b/p00.jpg\nphotos/a/p01.jpg\n")
    listed = list_photos([str(tmp_path / "list.txt")])
    assert [p.image_id for p in listed] == ["photos/a/p01.jpg", "photos/b/p00.jpg"]  # each listed once
    assert listed[0].path == str(root / "a" / "p01.jpg")
    with pytest.raises(FileNotFoundError, match="no such file, folder or glob"):
        list_photos([str(tmp_path / "missing")])
    with pytest.raises(FileNotFoundError, match="no file matches"):
        list_photos([str(tmp_path / "*.png")])


def test_captions_every_photo_and_gives_error_rows_for_bad_ones(tmp_path, lite_bundle):
    from caption_core.captioner import Captioner

    root = photo_folder(tmp_path / "photos")
    out = str(tmp_path / "out.jsonl")
    summary = run_batch(cfg(lite_bundle), list_photos([str(root)]), out, progress=False)
    assert summary["photos"] == 12 and summary["errors"] == 2 and summary["skipped"] == 0
    rows = by_id(out)
    assert len(rows) == 12
    bad = {k: r for k, r in rows.items() if r["error"]}
    assert sorted(bad) == ["a/p03.jpg", "b/p08.jpg"]
    assert all(r["caption"] is None and r["captions"] == [] for r in bad.values())
    assert all("p03.jpg" in r["error"] or "p08.jpg" in r["error"] for r in bad.values())  # the reason names it
    # the good rows: the captions Captioner.caption gives each photo alone, best first, with their scores
    cap = Captioner.from_bundle(lite_bundle)
    for image_id in ("a/p01.jpg", "b/p00.jpg", "b/p10.jpg"):
        alone = cap.caption(str(root / image_id), strategy="beam", beam_width=2, num_return=2)[0]
        row = rows[image_id]
        assert row["error"] is None and row["strategy"] == "beam" and row["bundle"] == "lite"
        assert [c["text"] for c in row["captions"]] == [c.text for c in alone.captions]
        assert row["caption"] == alone.captions[0].text
        assert np.allclose([c["score"] for c in row["captions"]], [c.score for c in alone.captions], atol=1e-3)
        assert [t["label"] for t in row["imagenet_top5"]] == [label for label, _ in alone.labels]


def test_a_killed_run_resumes_and_loses_nothing(tmp_path, lite_bundle):
    root = photo_folder(tmp_path / "photos")
    photos = list_photos([str(root)])
    out = tmp_path / "out.jsonl"
    first = run_batch(cfg(lite_bundle), photos, str(out), progress=False, stop_after=7)
    assert first["photos"] == 7 and len(done_ids(str(out))) == 7
    with open(out, "a") as f:  # the kill cut a line short
        f.write('{"image_id": "a/p13.jpg", "capt')
    second = run_batch(cfg(lite_bundle), photos, str(out), progress=False)
    assert second["skipped"] == 7 and second["photos"] == 5
    lines = out.read_text().splitlines()
    assert len(lines) == 12 and all(json.loads(line) for line in lines)  # the cut line is gone, none twice
    assert set(done_ids(str(out))) == {p.image_id for p in photos}
    third = run_batch(cfg(lite_bundle), photos, str(out), progress=False)
    assert third["photos"] == 0 and third["skipped"] == 12


def test_parquet_rows_match_json_lines_and_a_cut_file_is_set_aside(tmp_path, lite_bundle):
    root = photo_folder(tmp_path / "photos", n=6, bad=(2, 99))
    photos = list_photos([str(root)])
    run_batch(cfg(lite_bundle), photos, str(tmp_path / "out.jsonl"), progress=False)
    pq_out = tmp_path / "out.parquet"
    run_batch(cfg(lite_bundle, rows_per_file=4), photos, str(pq_out), progress=False)
    assert len([f for f in os.listdir(pq_out) if f.endswith(".parquet")]) == 2  # a batch of 5 rows, then 1
    assert by_id(str(pq_out)) == by_id(str(tmp_path / "out.jsonl"))
    # a file a kill cut short: unreadable, set aside, its photos captioned again by the rerun
    first = sorted(f for f in os.listdir(pq_out) if f.endswith(".parquet"))[0]
    data = (pq_out / first).read_bytes()
    (pq_out / first).write_bytes(data[: len(data) // 2])
    again = run_batch(cfg(lite_bundle), photos, str(pq_out), progress=False)
    assert again["photos"] == 5 and (pq_out / (first + ".incomplete")).exists()
    assert by_id(str(pq_out)) == by_id(str(tmp_path / "out.jsonl"))


def test_parquet_writer_never_leaves_a_partial_file(tmp_path):
    w = ParquetWriter(str(tmp_path / "o"), rows_per_file=3)
    w.write([{"image_id": str(i), "captions": [], "imagenet_top5": []} for i in range(2)])
    assert os.listdir(tmp_path / "o") == []  # pending rows are not on disk until a whole file is
    w.close()
    assert len(os.listdir(tmp_path / "o")) == 1 and done_ids(str(tmp_path / "o")) == {"0", "1"}


def test_hugging_face_dataset_source(tmp_path, lite_bundle):
    import datasets

    root = photo_folder(tmp_path / "photos", n=5, bad=(4, 99))
    files = sorted(str(p) for p in root.rglob("*.jpg"))
    ds = datasets.Dataset.from_dict({"img": files, "name": [os.path.basename(f) for f in files]})
    ds = ds.cast_column("img", datasets.Image())
    ds.save_to_disk(str(tmp_path / "hf"))
    hub = HubImages(str(tmp_path / "hf"), split="test", image_column="img", id_column="name")
    loaded = hub.load()
    photos = hub.photos(loaded)
    assert [p.image_id for p in photos] == [os.path.basename(f) for f in files]
    out = str(tmp_path / "hf.jsonl")
    summary = run_batch(cfg(lite_bundle), photos, out, dataset=loaded, hub=hub, progress=False)
    assert summary["photos"] == 5 and summary["errors"] == 1
    assert by_id(out)["p04.jpg"]["error"]
    # the same photos as files give the same captions
    files_out = str(tmp_path / "files.jsonl")
    run_batch(cfg(lite_bundle), list_photos(files), files_out, progress=False)
    as_files = {os.path.basename(k): r["captions"] for k, r in by_id(files_out).items()}
    assert {k: r["captions"] for k, r in by_id(out).items()} == as_files
    with pytest.raises(ValueError, match="no column 'image'"):
        HubImages(str(tmp_path / "hf")).load()


def test_a_hub_dataset_offline_fails_fast_with_a_clear_message(monkeypatch):
    from caption_core.hub import OfflineError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    with pytest.raises(OfflineError, match="needs the Hugging Face Hub"):
        HubImages("nobody-here/no-such-dataset-xyz").load()
    assert time.perf_counter() - t < 20


def test_command_line(tmp_path, lite_bundle, capsys):
    root = photo_folder(tmp_path / "photos", n=4, bad=(1, 99))
    out = str(tmp_path / "cli.jsonl")
    assert main([str(root), "-o", out, "--bundle", lite_bundle, "--strategy", "greedy", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["photos"] == 4 and summary["errors"] == 1
    assert {r["strategy"] for r in read_rows(out) if not r["error"]} == {"greedy"}
    assert main([str(root), "-o", out, "--bundle", lite_bundle, "--beam-width", "0", "--no-progress"]) == 2
    assert "beam_width" in capsys.readouterr().err
    from caption_core.__main__ import main as core_main  # python -m caption_core batch ...

    assert core_main(["batch", str(root), "-o", out, "--bundle", lite_bundle, "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["skipped"] == 4


# -- Ray Data ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="Ray is not installed (make test installs it)")
    from caption_core.ray_engine import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def test_ray_engine_writes_the_local_engines_captions(tmp_path, lite_bundle, local_ray):
    root = photo_folder(tmp_path / "photos", n=10, bad=(5, 99))
    photos = list_photos([str(root)])
    run_batch(cfg(lite_bundle), photos, str(tmp_path / "local.jsonl"), progress=False)
    out = str(tmp_path / "ray")
    summary = run_batch(cfg(lite_bundle, engine="ray", workers=2), photos[:6], out, progress=False)
    assert summary["photos"] == 6 and summary["workers"] == 2 and summary["errors"] == 1  # a/p05.jpg
    again = run_batch(cfg(lite_bundle, engine="ray", workers=2), photos, out, progress=False)  # resumes
    assert again["skipped"] == 6 and again["photos"] == 4 and again["errors"] == 0
    ray_rows, local_rows = by_id(out), by_id(str(tmp_path / "local.jsonl"))
    assert sorted(ray_rows) == sorted(local_rows)
    for k, r in local_rows.items():
        assert ray_rows[k]["error"] == r["error"]  # the same reason, naming the photo by its id
        assert [c["text"] for c in ray_rows[k]["captions"]] == [c["text"] for c in r["captions"]]
    with pytest.raises(ValueError, match="Ray writes a folder"):
        run_batch(cfg(lite_bundle, engine="ray"), photos, str(tmp_path / "local.jsonl"), progress=False)


def test_training_features_on_ray_match_the_local_engine(tmp_path, local_ray):
    from caption_core.encoders import build_encoder
    from helpers import make_flickr
    from training.datasets import load_captions
    from training.features import extract_features

    data = make_flickr(tmp_path / "flickr", per_split=(9, 1, 1), bad=True)
    examples = load_captions(data, "train")
    enc = build_encoder("efficientnet_lite0", {"precision": "float32", "batch_size": 4})
    local, valid = extract_features(enc, examples, data, "train", str(tmp_path / "c1"), progress=False)
    part, _ = extract_features(enc, examples, data, "train", str(tmp_path / "c2"), progress=False, engine="ray",
                               workers=2, stop_after=4)  # a kill after the first batch
    ray_feats, ray_valid = extract_features(enc, examples, data, "train", str(tmp_path / "c2"), progress=False,
                                            engine="ray", workers=2)
    assert (ray_valid == valid).all() and not valid.all()  # the broken file is marked unreadable either way
    assert np.allclose(np.asarray(ray_feats)[valid], np.asarray(local)[valid], atol=1e-4)


def test_a_cut_last_line_is_found_from_the_end(tmp_path):
    from caption_core.batch_io import _truncate_partial_line

    for content in (b"", b"no newline", b'{"a": 1}\n', b'{"a": 1}\n{"b": 2}\n{"c"', b"x" * 50 + b"\n" + b"y" * 70):
        path = tmp_path / "f.jsonl"
        path.write_bytes(content)
        _truncate_partial_line(str(path), chunk=8)  # several chunks back to the newline
        assert path.read_bytes() == content[: content.rfind(b"\n") + 1]


def test_the_batch_help_prints_its_whole_description(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "-> JSON lines or Parquet, one row per photo" in out and "Resumable" in out
