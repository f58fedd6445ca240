"""Plot training curves: ``python plot_curves.py -data_folder F -model_name M`` (from
``imcap/``, or ``python -m imcap.plot_curves``) writes ``F/results/M_curves.png`` with the
training loss and the early-stopping metric of every stage, from the training state that
train.py keeps.
"""

import json
import os
import sys

if __name__ == "__main__" and not __package__:
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only, no screen needed
import matplotlib.pyplot as plt  # noqa: E402

from imcap import args as imcap_args  # noqa: E402
from imcap.utils.fileio import DataError  # noqa: E402


def plot_curves(state, metric, out_path):
    """Draws loss and ``metric`` per epoch, the stages one after the other; returns the path."""
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 4))
    offset = 0
    for stage, stage_state in state["stages"].items():
        history = stage_state.get("history", [])
        epochs = [offset + h["epoch"] for h in history]
        loss_axis.plot(epochs, [h["loss"] for h in history], marker="o", label=stage)
        metric_axis.plot(epochs, [h.get(metric) for h in history], marker="o", label=stage)
        offset = epochs[-1] if epochs else offset
    for axis, title in ((loss_axis, "training loss"), (metric_axis, f"validation {metric}")):
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    temporary = out_path + ".partial.png"
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    os.replace(temporary, out_path)
    return out_path


def main(argv=None):
    args = imcap_args.parse_args(argv, "plot_curves.py")
    state_path = os.path.join(args.data_folder, "models", f"{args.model_name}_state.json")
    try:
        with open(state_path) as f:
            state = json.load(f)
    except FileNotFoundError:
        print(f"plot_curves: error: {DataError(f'no training state at {state_path}')}",
              file=sys.stderr)
        sys.exit(1)
    results = os.path.join(args.data_folder, "results")
    os.makedirs(results, exist_ok=True)
    print(plot_curves(state, args.es_metric, os.path.join(results,
                                                          f"{args.model_name}_curves.png")))


if __name__ == "__main__":
    main()
