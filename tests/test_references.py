"""The reference index: photos recognised after re-encoding, recolouring, rotation, resizing and borders;
flat or foreign photos never matched; the shipped index files and the app without a dataset folder."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from caption_core.images import load_image
from caption_core.photo_index import MatchConfig, PhotoIndex, fingerprint, texture
from caption_core.references import ReferenceIndex, References
from helpers import make_flickr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "references", "flickr8k")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import reference_matching as rm  # noqa: E402  (the transformations the README's figures were measured on)


def photo(seed: int, size=(224, 224)) -> Image.Image:
    """A photo-like image: smooth shapes and edges at several scales, some noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3)) + rng.uniform(40, 200, 3)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.05, 0.3)]
        img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    img += 30 * np.sin(x * rng.uniform(3, 20))[..., None] + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def index():
    return PhotoIndex.build([photo(i) for i in range(60)])


@pytest.mark.parametrize("name", list(rm.TRANSFORMS))
def test_a_copy_finds_its_photo(index, name):
    for i in (3, 17, 42):
        got = index.explain(load_image(rm.TRANSFORMS[name](photo(i))))
        if name == "crop 4% each side" and got["row"] is None:
            continue  # beyond what 16x16 thumbnails can verify: allowed to miss, never to match another photo
        assert got["row"] == i, (name, got)


def test_photos_outside_the_index_and_flat_images_are_never_matched(index):
    for i in range(100, 160):
        assert index.match(photo(i)) is None
    for kind, img in rm.generated(n_each=8):
        got = index.explain(img)
        assert got["row"] is None, (kind, got)
    flat = Image.new("RGB", (300, 200), (90, 140, 200))
    assert index.explain(flat)["reason"] == "too little texture to identify"


def test_texture_measures():
    flat = np.full((16, 16), 128, np.uint8)
    assert texture(flat) == (0.0, 0.0)
    contrast, edges = texture(fingerprint(photo(0)).thumb)
    assert contrast > MatchConfig().min_contrast and edges > MatchConfig().min_edges


def test_index_files_round_trip_and_refuse_tampering(tmp_path):
    data = make_flickr(tmp_path / "flickr", per_split=(5, 2, 3), bad=False)
    built = ReferenceIndex.build(data, made={"command": "test"})
    assert len(built) == 10 and built.made["splits"] == {"train": 5, "dev": 2, "test": 3}
    json_path, npz_path = built.save(str(tmp_path / "idx" / "flickr"))
    loaded = ReferenceIndex.load(str(tmp_path / "idx" / "flickr"))
    assert loaded.ids == built.ids and loaded.captions == built.captions and loaded.splits == built.splits
    np.testing.assert_array_equal(loaded.photos.thumbs, built.photos.thumbs)
    doc = json.load(open(json_path))
    assert doc["format"] == "caption_core.references/1" and doc["made"]["command"] == "test"
    first = os.path.join(data, "Images", built.ids[0])
    png = io.BytesIO()
    Image.open(first).resize((96, 80)).save(png, "PNG")
    assert loaded.lookup(load_image(png.getvalue()))[0] == built.ids[0]
    # the CIDEr-D document frequencies travel with the index: the same scores as counting them again
    from caption_core.metrics import CiderD

    assert loaded._cider is not None and doc["cider"]["documents"] == 10
    counted = CiderD(built.captions)
    for caps in loaded.captions[:4]:
        assert loaded.cider.score("a red square here", caps) == counted.score("a red square here", caps)
    assert set(loaded.cider.df) == set(counted.frequencies()) and max(counted.df.values()) == 10
    with open(npz_path, "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="checksum"):
        ReferenceIndex.load(str(tmp_path / "idx" / "flickr"))


def test_references_service_uses_a_shipped_index_without_a_dataset(tmp_path):
    data = make_flickr(tmp_path / "flickr", per_split=(3, 1, 2), bad=False)
    ReferenceIndex.build(data).save(str(tmp_path / "shipped"))
    refs = References(None, 3, index_prefix=str(tmp_path / "shipped"))
    assert refs.available and refs.ready.wait(10)
    name = sorted(os.listdir(os.path.join(data, "Images")))[0]
    found = refs.lookup(Image.open(os.path.join(data, "Images", name)).convert("L"))
    assert found[0] == name and len(found[1]) == 5
    assert "CIDEr" in refs.scores("a red square", found[1])
    none = References(None, 3, index_prefix=str(tmp_path / "missing"))
    assert not none.available and none.lookup(photo(1)) is None


@pytest.mark.realdata
def test_shipped_index_recognises_real_photos_and_nothing_else(shared_data):
    from caption_core.flickr import load_flickr_splits

    index = ReferenceIndex.load(SHIPPED)
    assert len(index) == 8000 and index.made["splits"] == {"train": 6000, "dev": 1000, "test": 1000}
    assert os.path.getsize(SHIPPED + ".json") + os.path.getsize(SHIPPED + ".npz") < 10e6
    test = load_flickr_splits(os.path.join(shared_data, "flickr8k"), ("test",))["test"]
    for e in test[::50]:  # 20 photos x 6 transformations
        im = Image.open(e.image).convert("RGB")
        for name in ("jpeg q20", "grayscale", "cmyk jpeg", "exif rotation", "original aspect 500x375", "white border 2%"):
            found = index.lookup(load_image(rm.TRANSFORMS[name](im)))
            assert found is not None and found[0] == e.image_id, (name, e.image_id)
            assert list(found[1]) == list(e.captions)
    cifar = os.path.join(shared_data, "cifar10", "test", "ship")
    for f in sorted(os.listdir(cifar))[:100]:
        im = Image.open(os.path.join(cifar, f)).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
        assert index.lookup(im) is None, f


def test_shipped_index_files_are_committed_and_load():
    index = ReferenceIndex.load(SHIPPED)
    assert len(index) == 8000 and all(len(c) == 5 for c in index.captions)
    assert index.made["command"].startswith("python -m training references")


@pytest.mark.realdata
def test_app_from_the_committed_tree_alone_shows_references(shared_data, tmp_path):
    """A copy of the committed files (no ../shared beside it, Hub offline), started with `python app.py`:
    a Flickr8k test photo, squashed or at its original aspect, gets its five references through the API."""
    from gradio_client import Client, handle_file

    from caption_core.flickr import load_flickr_splits
    from helpers import free_port

    copy = tmp_path / "space"
    # the working tree as it would be committed: tracked and new files, nothing git ignores (no cache/, runs/)
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in (f for f in files if os.path.isfile(os.path.join(ROOT, f))):
        dst = copy / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(os.path.join(ROOT, f), "rb") as src:
            dst.write_bytes(src.read())
    assert not (tmp_path / "shared").exists()
    e = load_flickr_splits(os.path.join(shared_data, "flickr8k"), ("test",))["test"][7]
    squashed, original = tmp_path / "upload.jpg", tmp_path / "original.png"
    Image.open(e.image).save(squashed, quality=80)
    Image.open(e.image).resize((500, 375), Image.Resampling.LANCZOS).save(original)
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_SERVER_PORT": str(port), "CAPTION_DATA_DIR": ""}
    env.pop("CAPTION_APP_NO_DEMO", None)
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=copy, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        client = None
        for _ in range(120):
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:
                if proc.poll() is not None:
                    raise AssertionError(proc.stdout.read())
                import time

                time.sleep(0.5)
        assert client is not None, "the app did not start"
        for upload in (squashed, original):
            _, refs_md, details = client.predict(handle_file(str(upload)), api_name="/caption")
            assert details["reference_image"] == e.image_id, refs_md
            assert details["references"] == list(e.captions)
            # the default bundle (an ensemble) returns its attention member's per-word maps, and what the detector saw
            att = details["attention"]
            assert att and att.get("member") and len(att["maps"]) == len(att["words"]) > 0, att
            assert details["objects"] is not None and "counts" in details["objects"], details["objects"]
    finally:
        proc.terminate()
        proc.wait(30)
    log = proc.stdout.read()  # python app.py loaded the default bundle in its head-start process too
    assert "ready in a second process" in log and "head start: stopped" not in log, log


def test_hub_examples_from_a_parquet_file_and_offline(tmp_path, monkeypatch):
    """The Space's example photos: the first rows of the Hub dataset's test parquet file, kept in the cache;
    offline (nothing fetched before) it fails fast and the page keeps its bundled photos."""
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq

    from caption_core.hub import OfflineError, cached_examples, dataset_examples, examples_from_parquet

    rows = []
    for i in range(5):
        buf = io.BytesIO()
        photo(i, (60, 80)).save(buf, "JPEG" if i % 2 else "PNG")
        rows.append({"bytes": buf.getvalue(), "path": None})
    table = pa.table({"image": rows, "caption_0": [f"caption {i}" for i in range(5)]})
    pq.write_table(table, tmp_path / "test-00000-of-00001.parquet")
    folder = tmp_path / "cache" / "hub-examples" / "jxie--flickr8k"
    paths = examples_from_parquet(str(tmp_path / "test-00000-of-00001.parquet"), str(folder), 3)
    assert [os.path.basename(p) for p in paths] == ["000.png", "001.jpg", "002.png"]
    assert load_image(paths[1]).size == (80, 60) and cached_examples(str(folder)) == paths
    assert dataset_examples("jxie/flickr8k", str(folder)) == paths  # fetched once: the cache answers
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    with pytest.raises(OfflineError, match="bundled example photos"):
        dataset_examples("jxie/flickr8k", str(tmp_path / "empty"))
    assert time.perf_counter() - t < 1


def test_a_dataset_folder_uses_the_shipped_index_when_it_describes_it(tmp_path, monkeypatch):
    """The shipped index serves a data folder with the same photos and captions (no decoding of the folder at
    a first start); another folder gets an index built from its own photos."""
    data = make_flickr(tmp_path / "flickr", per_split=(3, 1, 2), bad=False)
    ReferenceIndex.build(data).save(str(tmp_path / "shipped"))
    built = []
    original = References._built
    monkeypatch.setattr(References, "_built", lambda self: built.append(1) or original(self))
    same = References(data, 2, cache_dir=str(tmp_path / "cache"), index_prefix=str(tmp_path / "shipped"))
    assert same.ready.wait(10) and same.index is not None and built == []
    other = make_flickr(tmp_path / "other", per_split=(2, 1, 1), bad=False)
    refs = References(other, 2, cache_dir=str(tmp_path / "cache"), index_prefix=str(tmp_path / "shipped"))
    assert refs.ready.wait(30) and len(refs.index) == 4 and built == [1]


def test_shipped_index_carries_the_cider_frequencies():
    """The app's first caption of a dataset photo has CIDEr: the frequencies load with the index."""
    index = ReferenceIndex.load(SHIPPED)
    assert index._cider is not None and index.cider.documents == 8000 and len(index.cider.df) > 50_000
    assert index.cider.df[("a",)] > 7000 and index.cider.df[("a", "dog")] > 1000
