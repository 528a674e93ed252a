"""Test data made by the tests, and a free port for servers they start."""

import socket

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_flickr(root, per_split=(12, 6, 6), bad=True):
    """A Flickr8k-layout folder: coloured squares captioned with their colour."""
    img_dir = root / "Images"
    img_dir.mkdir(parents=True)
    tokens, rng = [], np.random.default_rng(0)
    names = {}
    i = 0
    for split, n in zip(("train", "dev", "test"), per_split):
        names[split] = []
        for _ in range(n):
            colour = list(COLOURS)[i % 3]
            arr = np.array(COLOURS[colour], np.float64) + rng.normal(0, 10, (40, 48, 3))
            for _ in range(3):  # a few lighter and darker patches: texture enough for a photo to be identified
                y, x = rng.integers(0, 30), rng.integers(0, 36)
                arr[y:y + rng.integers(6, 16), x:x + rng.integers(6, 16)] += rng.choice([-70, 70])
            arr = np.clip(arr, 0, 255).astype(np.uint8)
            name = f"{i:04d}_{colour}.jpg"
            Image.fromarray(arr).save(img_dir / name)
            names[split].append(name)
            for k, cap in enumerate([f"A {colour} square .", f"a {colour} square", f"The {colour} square !",
                                     f"a bright {colour} square", f"a {colour} square here"]):
                tokens.append(f"{name}#{k}\t{cap}")
            i += 1
    if bad:
        (img_dir / "9999_broken.jpg").write_bytes(b"not a jpeg")
        names["train"].append("9999_broken.jpg")
        tokens += [f"9999_broken.jpg#{k}\ta broken file" for k in range(5)]
        names["train"].append("9998_nocaption.jpg")
    (root / "Flickr8k.token.txt").write_text("\n".join(tokens) + "\n")
    for split, fname in (("train", "Flickr_8k.trainImages.txt"), ("dev", "Flickr_8k.devImages.txt"),
                         ("test", "Flickr_8k.testImages.txt")):
        (root / fname).write_text("\n".join(names[split]) + "\n")
    return str(root)
