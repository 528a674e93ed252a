"""A batch job killed and resumed, on a folder where 1 photo in 50 is corrupt: nothing lost, nothing twice.

    .venv/bin/python benchmarks/batch_resume.py [--photos 500] [--bundle weights/efficientnet_lite0-flickr8k]
                                                [--engine local|ray] [--kill-after 12] [--json OUT]

1. A temporary folder with the first ``--photos`` Flickr8k test photos (symlinks), every 50th replaced by a corrupt
   file (alternately text bytes and a JPEG cut to a third);
2. ``python -m caption_core batch`` on it, killed with SIGKILL ``--kill-after`` seconds after it starts;
3. the same command again, to the end; then an uninterrupted run into another output, for reference.
Checks: every photo has exactly one row; the corrupt ones are error rows with a reason; every other photo has the
uninterrupted run's captions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from batch_caption import test_photos  # noqa: E402
from training.common import write_json  # noqa: E402


def make_folder(folder: str, n: int) -> list[str]:
    bad = []
    for i, src in enumerate(test_photos(n)):
        dst = os.path.join(folder, os.path.basename(src))
        if i % 50 == 49:
            with open(src, "rb") as f:
                data = f.read()
            with open(dst, "wb") as f:
                f.write(b"this is not a photo" if len(bad) % 2 == 0 else data[: len(data) // 3])
            bad.append(os.path.basename(src))
        else:
            os.symlink(src, dst)
    return bad


def command(folder: str, out: str, args) -> list[str]:
    return [sys.executable, "-m", "caption_core", "batch", folder, "-o", out, "--bundle", args.bundle, "--engine",
            args.engine, "--workers", str(args.workers), "--encoder-option", "precision=float32", "--no-progress"]


def rows_of(out: str) -> list[dict]:
    from caption_core.batch import read_rows

    return list(read_rows(out))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=500)
    p.add_argument("--bundle", default=os.path.join(ROOT, "weights", "efficientnet_lite0-flickr8k"))
    p.add_argument("--engine", default="local", choices=("local", "ray"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--kill-after", type=float, default=12.0)
    p.add_argument("--json")
    args = p.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    tmp = tempfile.mkdtemp(prefix="batch-resume-")
    try:
        folder = os.path.join(tmp, "photos")
        os.makedirs(folder)
        bad = make_folder(folder, args.photos)
        out = os.path.join(tmp, "out.jsonl" if args.engine == "local" else "out")
        t = time.perf_counter()
        proc = subprocess.Popen(command(folder, out, args), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(args.kill_after)
        os.killpg(proc.pid, signal.SIGKILL)  # the job and anything it started (Ray's workers are Ray's own)
        proc.wait()
        if args.engine == "ray":
            subprocess.run([os.path.join(os.path.dirname(sys.executable), "ray"), "stop", "--force"],
                           capture_output=True)
        before = rows_of(out)
        killed_at = round(time.perf_counter() - t, 1)
        resumed = subprocess.run(command(folder, out, args), cwd=ROOT, env=env, capture_output=True, text=True)
        summary = json.loads(resumed.stdout.strip().splitlines()[-1])
        after = rows_of(out)
        ref_out = os.path.join(tmp, "reference.jsonl")
        subprocess.run(command(folder, ref_out, argparse.Namespace(**{**vars(args), "engine": "local"})), cwd=ROOT,
                       env=env, capture_output=True, check=True)
        reference = {r["image_id"]: r for r in rows_of(ref_out)}
        ids = [r["image_id"] for r in after]
        errors = {r["image_id"]: r["error"] for r in after if r["error"]}
        good = [r for r in after if not r["error"]]
        same = sum(r["captions"] == reference[r["image_id"]]["captions"] for r in good)  # texts and scores
        same_text = sum(r["caption"] == reference[r["image_id"]]["caption"] for r in good)
        diff = max((abs(a["score"] - b["score"]) for r in good
                    for a, b in zip(r["captions"], reference[r["image_id"]]["captions"])), default=0.0)
        result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "engine": args.engine,
                  "bundle": os.path.basename(os.path.normpath(args.bundle)), "photos": args.photos,
                  "corrupt": len(bad), "killed_after_s": killed_at, "rows_before_resume": len(before),
                  "resume_summary": summary, "rows": len(after), "distinct_ids": len(set(ids)),
                  "every_photo_once": sorted(ids) == sorted(reference), "error_rows": len(errors),
                  "error_rows_are_the_corrupt_files": sorted(errors) == sorted(bad),
                  "error_example": next(iter(errors.values()), None),
                  "captions_equal_to_an_uninterrupted_run": f"{same}/{len(good)}",
                  "best_caption_equal": f"{same_text}/{len(good)}", "largest_score_difference": round(diff, 5)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=1))
    if args.json:
        write_json(args.json, result)
    return 0 if result["every_photo_once"] and result["error_rows_are_the_corrupt_files"] else 1


if __name__ == "__main__":
    sys.exit(main())
