"""Run ``sample_captions.ipynb`` headless with nbclient (what the test suite does), and with
``--save`` write it back with its outputs (how the committed copy was made, from the demo model):

    python notebooks/run_notebook.py [--save]

``IMCAP_MODEL``, ``IMCAP_DATA`` and ``IMCAP_IMAGE`` choose the model, data and image (see the
notebook's first cell). TensorFlow's start-up messages on stderr are left out of saved outputs.
"""

import argparse
import os

import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))
NOTEBOOK = os.path.join(HERE, "sample_captions.ipynb")


def run(path=NOTEBOOK, timeout=600):
    """Executes the notebook in its folder; returns it with its outputs."""
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(path)}}).execute()
    return notebook


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--save", action="store_true", help="write the outputs back")
    args = parser.parse_args()
    notebook = run()
    if args.save:
        for cell in notebook.cells:
            if cell.cell_type == "code":
                cell.outputs = [o for o in cell.outputs
                                if not (o.output_type == "stream" and o.name == "stderr")]
        temporary = NOTEBOOK + ".partial"
        nbformat.write(notebook, temporary)
        os.replace(temporary, NOTEBOOK)


if __name__ == "__main__":
    main()
