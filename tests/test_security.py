"""Security: models load with ``safe_mode=True``, nothing is pickled, and JSON and HDF5 are the
only data formats imcap reads or writes (file names that leave ``--images_root`` and
checkpoints with Lambda layers are refused: see ``tests/bad_inputs.md``)."""

import json
import os
import re
import zipfile

from imcap.utils import checkpoints

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "imcap")
FORBIDDEN = {
    r"\bpickle\b|\bcPickle\b|\bdill\b|\bjoblib\b": "pickle",
    r"allow_pickle\s*=\s*True": "allow_pickle=True",
    r"safe_mode\s*=\s*False|enable_unsafe_deserialization": "unsafe Keras loading",
    r"\bnp\.load\(|numpy\.load\(|np\.fromfile\(": "NumPy's own file formats",
    r"layers\.Lambda\b|keras\.layers\.Lambda\b": "Lambda layers",
    r"\beval\(|\bexec\(": "eval/exec",
    r"torch\.load|yaml\.load\b|marshal\.": "other unsafe loaders",
}


def sources():
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                yield os.path.join(folder, name)


def test_the_package_never_unpickles_or_loads_unsafely():
    found = []
    for path in sources():
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                for pattern, what in FORBIDDEN.items():
                    if re.search(pattern, line.split("#")[0]):
                        found.append(f"{os.path.relpath(path, PACKAGE)}:{number}: {what}")
    assert not found, found


def test_every_model_load_goes_through_safe_mode():
    calls = []
    for path in sources():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for match in re.finditer(r"(keras\.)?(saving\.)?load_model\(([^)]*)\)", text):
            if match.group(1) or match.group(2):
                calls.append((path, match.group(3)))
    assert calls and all("safe_mode=True" in arguments for _, arguments in calls), calls


HDF5 = b"\x89HDF\r\n\x1a\n"


def kind_of(path):
    """What a file written by training is, from its bytes."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head == HDF5:
        return "hdf5"
    if head.startswith(b"PK"):
        with zipfile.ZipFile(path) as archive:
            inner = {name: archive.read(name)[:8] for name in archive.namelist()}
        assert set(inner) == {"config.json", "metadata.json", "model.weights.h5"}, inner
        assert inner["model.weights.h5"] == HDF5
        config = json.loads(zipfile.ZipFile(path).read("config.json"))
        assert "Lambda" not in json.dumps(config)
        return "keras"
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        json.loads(text)
        return "json"
    if path.endswith((".csv", ".log")):
        return "text"
    return "other"


def assert_only_json_hdf5_and_keras(folder):
    """Checks what a training run wrote in ``folder``'s models/ and tmp/: checkpoints are
    .keras zips holding JSON and HDF5 (no Lambda) that load with safe_mode=True, the optimizer
    state and the feature cache are HDF5, the state is JSON. (Called by
    ``tests/test_faults.py`` on its run from the feature cache, to train only once.)"""
    kinds = {}
    for sub in ("models", "tmp"):
        for name in os.listdir(folder / sub):
            path = str(folder / sub / name)
            if os.path.isfile(path):
                kinds[f"{sub}/{name}"] = kind_of(path)
                if kinds[f"{sub}/{name}"] == "keras":
                    checkpoints.load_model(path, compile=False)
    assert "other" not in kinds.values(), kinds
    assert {"keras", "hdf5", "json"} <= set(kinds.values()), kinds
    assert kinds["tmp/model_features.h5"] == "hdf5"
    assert any(name.endswith("_optimizer.h5") and kind == "hdf5" for name, kind in kinds.items())
