"""Plot training curves: ``python plot_curves.py -data_folder F -model_name M`` (from
``imcap/``, or ``python -m imcap.plot_curves``) writes ``F/results/M_curves.png`` with the
training loss and the early-stopping metric of every stage, from the training state that
train.py keeps.
"""

import os
import sys

if __name__ == "__main__" and not __package__:
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only, no screen needed
import matplotlib.pyplot as plt  # noqa: E402

from imcap import args as imcap_args  # noqa: E402
from imcap.training.run_folder import RunFolder, validation_value  # noqa: E402
from imcap.utils.cli import one_line_errors  # noqa: E402
from imcap.utils.fileio import DataError, atomic_output  # noqa: E402


def plot_curves(state, metric, out_path):
    """Draws loss and ``metric`` per epoch of ``state`` (a ``TrainingState``), the stages one
    after the other; returns the path."""
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 4))
    offset = 0
    for stage, stage_state in state.stages.items():
        history = stage_state.history
        epochs = [offset + h["epoch"] for h in history]
        loss_axis.plot(epochs, [h["loss"] for h in history], marker="o", label=stage)
        metric_axis.plot(epochs, [validation_value(h, metric) for h in history], marker="o",
                         label=stage)
        offset = epochs[-1] if epochs else offset
    for axis, title in ((loss_axis, "training loss"), (metric_axis, f"validation {metric}")):
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    with atomic_output(out_path, ".png") as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)
    return out_path


def main(argv=None):
    args = imcap_args.parse_args(argv, "plot_curves.py")
    run = RunFolder(args.data_folder, args.model_name)
    with one_line_errors("plot_curves"):
        if not os.path.isfile(run.state):
            raise DataError(f"no training state at {run.state}")
        print(plot_curves(run.read_state(), args.es_metric, run.curves))


if __name__ == "__main__":
    main()
