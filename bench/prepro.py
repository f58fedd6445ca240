"""Benchmark: image preprocessing throughput of prepro_coco.py against a NeuralTalk2-style loop.

Generates ``--num_images`` COCO-like JPEGs (``--source_size``, default 640x480, photo-like
detail, quality 90), then times, each ``--repeats`` times:

* ``baseline_serial``: a plain loop, as NeuralTalk2 / imcap_keras did it with scipy's ``imread``
  and ``imresize`` (both Pillow underneath): open, convert to an RGB array, resize to S x S
  (bilinear), write the image into the HDF5;
* ``prepro_workers_1`` and ``prepro_workers_N``: ``prepro_coco.py`` itself (the whole run: text
  processing, parallel decoding with JPEG draft, chunked HDF5 writes, atomic rename) with one
  worker and with all cores;
* ``prepro_workers_N_exact``: the same with ``--jpeg_draft_ratio 1`` (no decode below the target
  size), and how far the default's pixels are from it (``draft_vs_exact_abs_diff``).

Prints one JSON object per line (``workload``, ``unit``, ``median``, ``min``, ``max``, ``n``,
``speedup_vs_baseline``, and the machine), then a summary line. Run it on an otherwise idle
machine: ``python bench/prepro.py``.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

import h5py
import numpy as np
from PIL import Image

from imcap.utils import prepro_coco


def make_jpegs(folder, num_images, width, height, seed=0):
    """Photo-like JPEGs: smooth colour fields plus fine texture, so decoding costs what a
    photo costs."""
    rng = np.random.default_rng(seed)
    records = []
    os.makedirs(os.path.join(folder, "img"), exist_ok=True)
    for i in range(num_images):
        coarse = rng.integers(0, 256, size=(9, 12, 3)).astype(np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((width, height),
                                                         Image.Resampling.BICUBIC), dtype=np.int16)
        texture = rng.normal(0, 18, size=(height, width, 1)).astype(np.int16)
        pixels = np.clip(base + texture, 0, 255).astype(np.uint8)
        name = f"img/{i:05d}.jpg"
        Image.fromarray(pixels).save(os.path.join(folder, name), quality=90)
        records.append({"file_path": name, "captions": ["a picture of noise"], "id": i})
    with open(os.path.join(folder, "raw.json"), "w") as f:
        json.dump(records, f)
    return [os.path.join(folder, r["file_path"]) for r in records]


def baseline_serial(paths, size, out):
    """imcap_keras' / NeuralTalk2's loop: ``imread`` (Pillow decode to an array), ``imresize``
    (array to Pillow image, bilinear resize, back to an array), one HDF5 write per image."""
    with h5py.File(out, "w") as f:
        images = f.create_dataset("images", (len(paths), 3, size, size), dtype="uint8")
        for i, path in enumerate(paths):
            pixels = np.array(Image.open(path).convert("RGB"))
            resized = np.array(Image.fromarray(pixels).resize((size, size),
                                                              Image.Resampling.BILINEAR))
            images[i] = resized.transpose(2, 0, 1)


def run_prepro(folder, size, workers, out, draft_ratio=None):
    params = prepro_coco.parse_params([
        "--input_json", os.path.join(folder, "raw.json"), "--images_root", folder,
        "--imsize", str(size), "--workers", str(workers), "--output_json", out + ".json",
        "--output_h5", out] + (["--jpeg_draft_ratio", str(draft_ratio)] if draft_ratio else []))
    stdout = sys.stdout
    sys.stdout = open(os.devnull, "w")
    try:
        prepro_coco.main(params)
    finally:
        sys.stdout.close()
        sys.stdout = stdout


def timed(fn, repeats, num_images, outputs):
    rates = []
    for _ in range(repeats):
        for path in outputs:  # every run writes new files, as a first run does
            if os.path.exists(path):
                os.remove(path)
        start = time.perf_counter()
        fn()
        rates.append(num_images / (time.perf_counter() - start))
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_images", type=int, default=400)
    parser.add_argument("--source_size", default="640x480", help="WIDTHxHEIGHT of the JPEGs")
    parser.add_argument("--imsize", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    width, height = (int(v) for v in args.source_size.split("x"))
    cores = os.cpu_count()
    machine = {"cpu_count": cores, "machine": platform.machine(), "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as folder:
        paths = make_jpegs(folder, args.num_images, width, height)
        out = os.path.join(folder, "out.h5")
        exact = os.path.join(folder, "exact.h5")
        workloads = [("baseline_serial", out, lambda: baseline_serial(paths, args.imsize, out))]
        workloads.append(("prepro_workers_1", out,
                          lambda: run_prepro(folder, args.imsize, 1, out)))
        if cores > 1:
            workloads.append((f"prepro_workers_{cores}", out,
                              lambda: run_prepro(folder, args.imsize, cores, out)))
        workloads.append((f"prepro_workers_{cores}_exact", exact,
                          lambda: run_prepro(folder, args.imsize, cores, exact, draft_ratio=1)))
        results = {}
        for name, output, fn in workloads:
            rates = timed(fn, args.repeats, args.num_images, [output, output + ".json"])
            results[name] = statistics.median(rates)
            print(json.dumps({
                "workload": name, "unit": "images/s", "median": round(results[name], 1),
                "min": round(min(rates), 1), "max": round(max(rates), 1), "n": len(rates),
                "speedup_vs_baseline": round(results[name] / results["baseline_serial"], 2),
                "num_images": args.num_images, "source_size": args.source_size,
                "imsize": args.imsize, **machine}), flush=True)
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with h5py.File(out, "r") as a, h5py.File(exact, "r") as b:
            diff = np.abs(a["images"][()].astype(np.int16) - b["images"][()].astype(np.int16))
    print(json.dumps({"workload": "summary", "best_speedup": round(
        max(results.values()) / results["baseline_serial"], 2), "peak_rss_mib": round(
        peak_kib / 1024, 1), "draft_vs_exact_abs_diff": {
        "mean": round(float(diff.mean()), 2), "p99": int(np.percentile(diff, 99))}}))


if __name__ == "__main__":
    main()
