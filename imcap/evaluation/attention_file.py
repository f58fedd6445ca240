"""The attention file test.py writes with ``--save_attention``: per caption its word ids, the
attention over regions (alpha) and the sentinel weights (beta), as HDF5, with the vocabulary.

Datasets ``image_id`` (N,), ``words`` (N, L) int (0 after ``<eos>``), ``alpha`` (N, L, K),
``beta`` (N, L); the attribute ``vocabulary`` holds the words of ids 1..V-1, one per line.
"""

import h5py

from imcap.data.vocabulary import Vocabulary
from imcap.utils.fileio import atomic_output


def write_attention(path, attention, vocabulary):
    """The words, attention (alpha) and sentinel weights (beta) of every caption, as HDF5."""
    with atomic_output(path) as temporary, h5py.File(temporary, "w") as f:
        for key, value in attention.items():
            f.create_dataset(key, data=value, compression="gzip" if value.ndim > 2 else None)
        f.attrs["vocabulary"] = "\n".join(vocabulary.words)  # word id i is line i - 1


def read_attention(path):
    """``(arrays {"image_id", "words", "alpha", "beta"}, Vocabulary)`` of ``write_attention``."""
    with h5py.File(path, "r") as f:
        arrays = {key: f[key][:] for key in ("image_id", "words", "alpha", "beta")}
        return arrays, Vocabulary(f.attrs["vocabulary"].split("\n"))
