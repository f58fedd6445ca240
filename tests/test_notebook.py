"""notebooks/sample_captions.ipynb runs top to bottom headless (nbclient) on a tiny model."""

import os
import sys

import keras
import nbformat
import numpy as np
import pytest
from PIL import Image

from imcap.models.captioner import Captioner
from imcap.models.config import CaptionerConfig
from imcap.models import saving
from imcap.data.loader import CaptionData

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "notebooks"))

import run_notebook  # noqa: E402


@pytest.mark.slow
def test_the_notebook_runs_headless_and_shows_its_figures(data_folder, tmp_path, monkeypatch):
    """One execution, through run_notebook.py's flags: --model, --data (here with its .json
    ending), --image (relative paths: the kernel runs in notebooks/) and --output."""
    stem = str(data_folder / "data" / "cocotalk_challenge")
    data = CaptionData(stem + ".h5", stem + ".json", "test")
    keras.utils.set_random_seed(5)
    model = Captioner(CaptionerConfig(
        vocabulary=data.vocabulary, cnn_weights="none", cnn_layer="conv2_block1_out",
        image_size=32, emb_dim=8, z_dim=8, lstm_dim=8, dr_ratio=0.0, use_sentinel=True, max_length=6))
    saving.save_model(model, str(tmp_path / "tiny.keras"))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 4), np.uint8),
                    "RGBA").save(tmp_path / "mine.png")
    for name in ("IMCAP_MODEL", "IMCAP_DATA", "IMCAP_IMAGE"):  # the flags alone choose
        monkeypatch.setenv(name, "/nonexistent")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out" / "executed.ipynb"
    out.parent.mkdir()
    before = os.path.getmtime(run_notebook.NOTEBOOK)
    returned = run_notebook.main(["--model", "tiny.keras", "--data", stem + ".json",
                                  "--image", "mine.png", "--output", str(out)])
    assert os.listdir(out.parent) == ["executed.ipynb"]  # renamed from executed.ipynb.partial
    assert os.path.getmtime(run_notebook.NOTEBOOK) == before  # no --save: left alone
    assert os.environ["IMCAP_MODEL"] == "/nonexistent"  # set for the kernel only
    notebook = nbformat.read(str(out), as_version=4)
    assert len(notebook.cells) == len(returned.cells)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    figures = [o for o in outputs if o.output_type == "display_data"
               and ("image/jpeg" in o.data or "image/png" in o.data)]
    assert len(figures) == 4  # captions, two attention figures, your own image
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "mine.png ->" in text and "sentinel on" in text


@pytest.mark.parametrize("argv,message", [
    (["--model", "nope.keras"], "--model: no such file: nope.keras"),
    (["--data", "{tmp}/talk.json"], "--data: no such file: {tmp}/talk.h5"),
    (["--image", "{tmp}"], "--image: no such file: {tmp}"),
    (["--output", "{tmp}/no/out.ipynb"], "--output: no such folder: {tmp}/no"),
])
def test_run_notebook_flags_check_their_paths_before_starting_a_kernel(argv, message, tmp_path,
                                                                       capsys):
    (tmp_path / "talk.json").write_text("{}")
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    with pytest.raises(SystemExit) as stop:
        run_notebook.main(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"run_notebook.py: error: {message.format(tmp=tmp_path)} (see run_notebook.py --help)"]


def test_write_is_atomic_and_leaves_out_stderr(tmp_path, monkeypatch):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)", outputs=[
        nbformat.v4.new_output("stream", name="stderr", text="TensorFlow says hello"),
        nbformat.v4.new_output("stream", name="stdout", text="1")])])
    path = str(tmp_path / "out.ipynb")
    run_notebook.write(notebook, path)
    assert os.listdir(tmp_path) == ["out.ipynb"]
    assert [o.name for o in nbformat.read(path, as_version=4).cells[0].outputs] == ["stdout"]

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(run_notebook.os, "replace", full_disk)
    with pytest.raises(OSError):
        run_notebook.write(notebook, str(tmp_path / "other.ipynb"))
    assert os.listdir(tmp_path) == ["out.ipynb"]  # no other.ipynb.partial left
