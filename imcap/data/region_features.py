"""Precomputed region features, from a features file or a folder: what training and captioning
read instead of images with ``-features PATH`` (and the format of imcap's own feature cache).

The features file is HDF5 with, for N images of up to K regions of D channels:

    features     (N, K, D) float16 or float32
    image_ids    (N,) int64, the ``id`` of each row's image in prepro_coco.py's JSON; any order
    num_regions  (N,) int32, optional: the real regions of each row (the rows after them are
                 padding); without it every image has K regions
    attributes   free-form, describing the extractor (imcap writes ``backbone``, ``layer``,
                 ``image_size``, ``preprocessing``)

A folder holds one file per image, as self-critical.pytorch's ``cocobu_att``: ``{image_id}.npz``
with an array ``feat`` (K_i, D), or ``{image_id}.npy`` (K_i, D); K_i may differ per image. Arrays
are read with ``allow_pickle=False``: an object array is refused.

Both give batches of (B, K, D) float32 features, zero after each image's real regions, and
(B,) int32 region counts; a NaN or infinite value is refused naming the image.
"""

import os
import sys
import zipfile

import h5py
import numpy as np
from tqdm import tqdm

from imcap.utils.fileio import DataError

SUFFIXES = (".npz", ".npy")


class RegionFeatures:
    """What both sources share. Attributes: ``path``, ``max_regions`` (K), ``dim`` (D),
    ``variable`` (whether images have different region counts), ``attrs`` (a dict)."""

    kind = "features"

    def __init__(self, path, counts, max_regions, dim, attrs=None):
        self.path, self.max_regions, self.dim = path, int(max_regions), int(dim)
        self.counts = counts  # image id -> its number of regions
        self.variable = len(set(counts.values())) > 1 or any(
            count != self.max_regions for count in counts.values())
        self.attrs = dict(attrs or {})

    def __len__(self):
        return len(self.counts)

    @property
    def image_ids(self):
        return np.fromiter(self.counts, dtype=np.int64, count=len(self.counts))

    def check_images(self, image_ids, json_path, split):
        """Refuses a source that lacks an image of the split, naming the first missing id (or
        saying that none of its ids is an image of the JSON)."""
        missing = [int(i) for i in image_ids if int(i) not in self.counts]
        if not missing:
            return
        if len(missing) == len(image_ids):
            some = ", ".join(str(i) for i in list(self.counts)[:3])
            raise DataError(f"{self.kind} {self.path}: none of its image ids ({some}, ...) is an "
                            f"image of the {split} split of {json_path}; they must be the 'id's "
                            f"of prepro_coco.py's JSON")
        raise DataError(f"{self.kind} {self.path}: image {missing[0]} of the {split} split of "
                        f"{json_path} is missing ({len(missing)} of {len(image_ids)} are)")

    def read(self, image_ids, regions=None):
        """``(features (B, K, D) float32, num_regions (B,) int32)`` for ``image_ids``, padded
        with zeros to K = ``regions`` (a model's; at least ``max_regions``) or ``max_regions``."""
        regions = regions or self.max_regions
        if regions < self.max_regions:
            raise DataError(f"{self.kind} {self.path}: images have up to {self.max_regions} "
                            f"regions but the model takes {regions}")
        batch = np.zeros((len(image_ids), regions, self.dim), np.float32)
        counts = np.zeros(len(image_ids), np.int32)
        for n, image_id in enumerate(image_ids):
            rows = self._read_one(int(image_id))
            if not np.isfinite(rows).all():
                raise DataError(f"{self.kind} {self.path}: image {int(image_id)} has NaN or "
                                f"infinite values")
            batch[n, :len(rows)] = rows
            counts[n] = len(rows)
        return batch, counts

    def describe(self):
        """What a checkpoint trained on these features records about them."""
        return {"features": os.path.abspath(self.path), "num_regions": self.max_regions,
                "feature_dim": self.dim, "variable_regions": self.variable}

    def close(self):
        pass


class FeaturesFile(RegionFeatures):
    """The HDF5 features file (see the module docstring)."""

    kind = "features file"

    def __init__(self, path):
        self._file = None
        try:
            with h5py.File(path, "r") as f:
                if "features" not in f:
                    raise DataError(f"features file {path}: dataset 'features' is missing")
                shape = f["features"].shape
                if len(shape) != 3 or not shape[1] or not shape[2]:
                    raise DataError(f"features file {path}: 'features' has shape {shape}, "
                                    f"expected (N, K, D)")
                if "image_ids" not in f:
                    raise DataError(f"features file {path}: dataset 'image_ids' is missing "
                                    f"(the prepro JSON's image id of each row)")
                ids = f["image_ids"][()]
                counts = f["num_regions"][()] if "num_regions" in f else \
                    np.full(shape[0], shape[1])
                attrs = {k: _plain(v) for k, v in f.attrs.items()}
        except OSError as e:
            raise DataError(f"features file {path} cannot be read: {e}") from None
        for name, values in (("image_ids", ids), ("num_regions", counts)):
            if values.shape != (shape[0],) or not np.issubdtype(values.dtype, np.integer):
                raise DataError(f"features file {path}: '{name}' has shape {values.shape} "
                                f"and type {values.dtype}, expected ({shape[0]},) integers")
        empty = np.flatnonzero((counts < 1) | (counts > shape[1]))
        if len(empty):
            raise DataError(f"features file {path}: 'num_regions' of image {ids[empty[0]]} is "
                            f"{counts[empty[0]]}, expected 1 to {shape[1]}")
        if len(np.unique(ids)) != len(ids):
            raise DataError(f"features file {path}: 'image_ids' holds an id twice")
        self._rows = {int(i): n for n, i in enumerate(ids)}
        super().__init__(path, dict(zip(ids.tolist(), counts.tolist())), shape[1], shape[2],
                         attrs)

    def _read_one(self, image_id):
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file["features"][self._rows[image_id], :self.counts[image_id]]

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


class FeaturesFolder(RegionFeatures):
    """A folder of ``{image_id}.npz`` (array ``feat``) or ``{image_id}.npy`` files; their
    shapes are read from the headers once, the arrays when a batch needs them."""

    kind = "features folder"

    def __init__(self, path):
        names = sorted(n for n in os.listdir(path) if n.endswith(SUFFIXES))
        self._files = {}
        for name in names:
            stem = name.rsplit(".", 1)[0]
            if stem.isdigit():
                self._files.setdefault(int(stem), os.path.join(path, name))
        if not self._files:
            raise DataError(f"features folder {path} holds no {{image_id}}.npz or "
                            f"{{image_id}}.npy files")
        shapes = {}
        for image_id, file in tqdm(self._files.items(), desc="feature headers", unit="file",
                                   file=sys.stderr, disable=len(self._files) < 1000):
            shapes[image_id] = _array_header(file)
        dims = {shape[1] for shape in shapes.values()}
        if len(dims) > 1:
            first = next(iter(shapes.items()))
            other = next((i, s) for i, s in shapes.items() if s[1] != first[1][1])
            raise DataError(f"features folder {path}: image {first[0]} has {first[1][1]} "
                            f"channels but image {other[0]} has {other[1][1]}")
        counts = {image_id: shape[0] for image_id, shape in shapes.items()}
        super().__init__(path, counts, max(counts.values()), dims.pop())

    def _read_one(self, image_id):
        return _load_array(self._files[image_id])


def open_region_features(path):
    """The features at ``path``: a features folder, or a features file."""
    if os.path.isdir(path):
        return FeaturesFolder(path)
    if not os.path.exists(path):
        raise DataError(f"features not found: {path} (a features HDF5 file or a folder of "
                        f"{{image_id}}.npz / .npy files)")
    return FeaturesFile(path)


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value.item() if isinstance(value, np.generic) else value


def _header(stream, file):
    """(shape, dtype) from an .npy header, without reading the array."""
    try:
        version = np.lib.format.read_magic(stream)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, _, dtype = read(stream)
    except (ValueError, OSError) as e:
        raise DataError(f"features {file} is not a NumPy array file: {e}") from None
    return shape, dtype


def _array_header(file):
    """The (K, D) of a features file, checked: 2-D, numeric, at least one region."""
    if file.endswith(".npz"):
        try:
            with zipfile.ZipFile(file) as archive:
                if "feat.npy" not in archive.namelist():
                    arrays = ", ".join(n[:-4] for n in archive.namelist()) or "none"
                    raise DataError(f"features {file}: no array 'feat' (it holds {arrays})")
                with archive.open("feat.npy") as stream:
                    shape, dtype = _header(stream, file)
        except zipfile.BadZipFile as e:
            raise DataError(f"features {file} is not an .npz archive: {e}") from None
    else:
        with open(file, "rb") as stream:
            shape, dtype = _header(stream, file)
    if dtype.hasobject:
        raise DataError(f"features {file}: 'feat' is an object array, expected numbers "
                        f"(object arrays are never unpickled)")
    if not np.issubdtype(dtype, np.number) or len(shape) != 2:
        raise DataError(f"features {file}: 'feat' has shape {shape} and type {dtype}, "
                        f"expected (K, D) numbers")
    if shape[0] < 1:
        raise DataError(f"features {file}: 'feat' has zero regions, expected at least one")
    return shape


def _load_array(file):
    if file.endswith(".npz"):
        with np.load(file, allow_pickle=False) as archive:
            return archive["feat"]
    return np.load(file, allow_pickle=False)
