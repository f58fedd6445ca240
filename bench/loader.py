"""Benchmark: throughput of the tf.data loader (imcap.data.loader) feeding one training epoch.

Generates a synthetic shapes dataset (``--num_images`` train images), preprocesses it at each
``--imsize``, then consumes whole epochs of ``CaptionData.dataset(batch, preprocessor("resnet"), seq_per_img=5)`` inside
the TensorFlow graph (``Dataset.reduce``, as ``model.fit`` does), ``--repeats`` times. Prints one
JSON object per line: ``workload``, ``unit`` (images/s), ``median``, ``min``, ``max``, ``n``.
A model that trains slower than this is not held back by the loader.
"""

import argparse
import contextlib
import io
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from imcap.data import make_shapes  # noqa: E402
from imcap.utils import prepro_coco  # noqa: E402
from imcap.data.loader import CaptionData  # noqa: E402
from imcap.models.preprocessing import preprocessor  # noqa: E402

RESNET = preprocessor("resnet")  # the encoder's preprocessing, for image datasets


def epoch_rate(data, batch_size, epoch):
    dataset = data.dataset(batch_size, RESNET, seq_per_img=5, epoch=epoch)
    start = time.perf_counter()
    dataset.reduce(tf.constant(0.0), lambda total, batch: total + batch[0]["images"][0, 0, 0, 0])
    return len(data) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_images", type=int, default=2000)
    parser.add_argument("--imsize", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        make_shapes.generate(os.path.join(folder, "shapes"), num_train=args.num_images,
                             num_restval=0, num_val=10, num_test=10, image_size=256)
        for size in args.imsize:
            h5, js = (os.path.join(folder, f"d{size}.{ext}") for ext in ("h5", "json"))
            with contextlib.redirect_stdout(io.StringIO()):
                prepro_coco.main(prepro_coco.parse_params([
                    "--coco_path", os.path.join(folder, "shapes"), "--num_val", "10",
                    "--num_test", "10", "--imsize", str(size), "--output_h5", h5,
                    "--output_json", js]))
            data = CaptionData(h5, js, "train")
            epoch_rate(data, args.batch_size, 0)  # warm-up: graph tracing, file cache
            rates = [epoch_rate(data, args.batch_size, e + 1) for e in range(args.repeats)]
            print(json.dumps({"workload": f"loader_train_epoch_{size}px", "unit": "images/s",
                              "median": round(statistics.median(rates), 1),
                              "min": round(min(rates), 1), "max": round(max(rates), 1),
                              "n": len(rates), "batch_size": args.batch_size, "seq_per_img": 5,
                              "num_images": len(data), "cpu_count": os.cpu_count()}),
                  flush=True)


if __name__ == "__main__":
    main()
