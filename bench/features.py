"""Benchmark: ``imcap-features`` (``imcap.data.features.write_features``: HDF5 images ->
features file, the next batch read while the CNN runs) against the backbone's raw ``predict``
on the same images already in memory, for ResNet-50 (random weights) at 224 and 256 px.

Prints one JSON line per size: images/s of both and their ratio (the target is >= 0.9: the
pipeline must not starve the CNN), then the summary line.
"""

import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import imcap  # noqa: E402,F401 -- first: it sets how TensorFlow loads (imcap/__init__.py)

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from common import arguments, report, summary  # noqa: E402
from imcap.data import features  # noqa: E402
from imcap.models.encoder import build_encoder  # noqa: E402
from imcap.models.preprocessing import preprocess_images  # noqa: E402

IMAGES, BATCH = 96, 32


def main():
    args, repeats = arguments(__doc__.split("\n")[0], 3)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for size in (224, 256):
            if args.only and args.only not in str(size):
                continue
            pixels = rng.integers(0, 256, (IMAGES, 3, size, size), dtype=np.uint8)
            h5 = os.path.join(folder, f"images{size}.h5")
            with h5py.File(h5, "w") as f:
                f["images"] = pixels
            ids = np.arange(IMAGES, dtype=np.int64)
            encoder = build_encoder("resnet", None, size)
            in_memory = preprocess_images(pixels.transpose(0, 2, 3, 1), "resnet").numpy()
            encoder.predict(in_memory[:BATCH], batch_size=BATCH, verbose=0)  # warm-up
            raw, piped = [], []
            for n in range(repeats + 1):
                start = time.perf_counter()
                encoder.predict(in_memory, batch_size=BATCH, verbose=0)
                raw.append(IMAGES / (time.perf_counter() - start))
                out = os.path.join(folder, f"features{size}_{n}.h5")
                images = features.HDF5Images(h5)
                start = time.perf_counter()
                features.write_features(encoder, "resnet", images, ids, out, BATCH)
                piped.append(IMAGES / (time.perf_counter() - start))
                images.close()
            raw, piped = raw[1:], piped[1:]  # the first pass of write_features traces
            report(f"imcap_features_resnet50_{size}px", "float32", "images/s", piped,
                   raw_predict_median=round(statistics.median(raw), 2),
                   ratio_to_raw=round(statistics.median(piped) / statistics.median(raw), 3),
                   images=IMAGES, batch=BATCH)
    summary()


if __name__ == "__main__":
    main()
