"""Run ``sample_captions.ipynb`` headless with nbclient, on the demo model or on your own:

    python notebooks/run_notebook.py [--model M.keras] [--data DATA] [--image IMG]
                                     [--output OUT.ipynb] [--save]

``--model``, ``--data`` (the preprocessed data, ``DATA.json`` and ``DATA.h5``; its test split is
captioned) and ``--image`` (an image file of yours to caption) set ``IMCAP_MODEL``,
``IMCAP_DATA`` and ``IMCAP_IMAGE`` for the notebook's kernel (see its first cell); without them
the notebook uses the environment's, else the model ``make demo`` trains. ``--output`` writes the
executed notebook with its outputs there; ``--save`` writes it back over sample_captions.ipynb
(how the committed copy was made, from the demo model). Both write ``PATH.partial`` first and
rename it when complete, and leave out TensorFlow's start-up messages on stderr. See README.md.
"""

import os
import sys

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = os.path.dirname(os.path.abspath(__file__))
NOTEBOOK = os.path.join(HERE, "sample_captions.ipynb")
sys.path.insert(0, os.path.dirname(HERE))

from imcap.utils.cli import ArgumentParser, error_line  # noqa: E402  (one-line usage errors)
from imcap.utils.fileio import atomic_output  # noqa: E402


def run(path=NOTEBOOK, timeout=600, env=None):
    """Executes the notebook in its folder, its kernel in ``env`` (default: this process's
    environment); returns it with its outputs. Raises CellExecutionError if a cell fails."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(path)}})
    client.execute(**({} if env is None else {"env": env}))
    return notebook


def write(notebook, path):
    """Writes the executed notebook to ``path`` (through ``path.partial``), without stderr."""
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs
                            if not (o.output_type == "stream" and o.name == "stderr")]
    with atomic_output(path) as temporary:
        nbformat.write(notebook, temporary)


def get_parser():
    parser = ArgumentParser(prog="run_notebook.py",
                            description="Run sample_captions.ipynb headless (nbclient) on the "
                                        "demo model or on your own model, data and image.")
    parser.add_argument("--model", help="a checkpoint train.py wrote; sets IMCAP_MODEL "
                                        "(default: $IMCAP_MODEL, else the demo's "
                                        "demo/run/models/model_best.keras)")
    parser.add_argument("--data", help="the preprocessed data whose test split is captioned, "
                                       "DATA_FOLDER/data/NAME for NAME.json and NAME.h5 (a "
                                       ".json or .h5 ending is dropped); sets IMCAP_DATA "
                                       "(default: $IMCAP_DATA, else demo/run/data/shapes)")
    parser.add_argument("--image", help="an image file of yours to caption; sets IMCAP_IMAGE "
                                        "(default: $IMCAP_IMAGE, else a demo image)")
    parser.add_argument("--output", metavar="PATH",
                        help="write the executed notebook, with its outputs, there")
    parser.add_argument("--save", action="store_true",
                        help="write the executed notebook back over sample_captions.ipynb")
    parser.add_argument("--timeout", type=int, default=600,
                        help="seconds each cell may take (default: 600)")
    return parser


def kernel_env(args, parser):
    """This process's environment with the ``IMCAP_*`` variables the flags give, as absolute
    paths (the kernel runs in notebooks/); a missing file is a one-line usage error."""
    env = dict(os.environ)
    if args.data and args.data.endswith((".json", ".h5")):
        args.data = os.path.splitext(args.data)[0]
    for flag, name, value, files in (("--model", "IMCAP_MODEL", args.model, [""]),
                                     ("--data", "IMCAP_DATA", args.data, [".json", ".h5"]),
                                     ("--image", "IMCAP_IMAGE", args.image, [""])):
        if value is None:
            continue
        for suffix in files:
            if not os.path.isfile(value + suffix):
                parser.error(f"{flag}: no such file: {value + suffix}")
        env[name] = os.path.abspath(value)
    return env


def main(argv=None):
    """Runs the notebook as the flags ask; returns it executed."""
    parser = get_parser()
    args = parser.parse_args(argv)
    env = kernel_env(args, parser)
    if args.output and not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        parser.error(f"--output: no such folder: {os.path.dirname(args.output)}")
    try:
        notebook = run(timeout=args.timeout, env=env)
    except CellExecutionError as e:
        print(f"run_notebook: error: a cell failed: {e.ename}: {error_line(e.evalue)}",
              file=sys.stderr)
        sys.exit(1)
    targets = ([args.output] if args.output else []) + ([NOTEBOOK] if args.save else [])
    for path in targets:
        write(notebook, path)
        print(f"wrote {path}")
    return notebook


if __name__ == "__main__":
    main()
