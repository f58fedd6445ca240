"""Security: models load with ``safe_mode=True``, nothing is pickled, and JSON and HDF5 are the
only data formats imcap reads or writes (file names that leave ``--images_root`` and
checkpoints with Lambda layers are refused: see ``tests/bad_inputs.md``)."""

import os
import re


PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "imcap")
FORBIDDEN = {
    r"\bpickle\b|\bcPickle\b|\bdill\b|\bjoblib\b": "pickle",
    r"allow_pickle\s*=\s*True": "allow_pickle=True",
    r"safe_mode\s*=\s*False|enable_unsafe_deserialization": "unsafe Keras loading",
    # .npy / .npz only as self-critical.pytorch's features folders, never unpickling
    r"\b(np|numpy)\.load\((?![^)]*allow_pickle=False)|np\.fromfile\(":
        "NumPy's file formats without allow_pickle=False",
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
        # Keras' loaders (keras.saving.load_model, keras.models.load_model); imcap's own
        # imcap.models.saving.load_model is one of those callers
        for match in re.finditer(r"keras\.(saving|models)\.load_model\(([^)]*)\)", text):
            calls.append((path, match.group(2)))
    assert calls and all("safe_mode=True" in arguments for _, arguments in calls), calls


def test_the_numpy_rule_allows_only_loads_that_refuse_pickles():
    rule = next(p for p, what in FORBIDDEN.items() if what.startswith("NumPy"))
    for line in ("np.load(path)", "np.load(path, allow_pickle=True)", "numpy.load(f)",
                 "np.fromfile(f)"):
        assert re.search(rule, line), line
    assert not re.search(rule, "np.load(path, allow_pickle=False)")
