"""The whole pipeline on the built-in synthetic dataset, offline: ``make demo`` runs
``python -m imcap.demo --out demo``.

generate the shapes set (MS COCO layout) -> prepro_coco.py --coco_path -> train.py --sgate
(stage 1 from the feature cache, then self-critical training) -> test.py (greedy, and beam 3,
of both the cross-entropy model and the self-critical one) -> eval_caps.py -> grounding
(pointing accuracy, sentinel weights) -> figures (example captions with attention maps, the
training curves) -> ``OUT/summary.json``, whose path is printed last.

Each step runs the toolkit's own entry point in this process (the code path of MS COCO). The CNN
is ResNet-50 with random weights (``-cnn_weights none``: ImageNet weights cannot be downloaded
offline), truncated at ``conv4_block6_out`` on 128 px images (an 8 x 8 grid); with network access
``-cnn_weights imagenet`` is the one flag to change. ``--quick`` is the reduced run CI uses:
a small dataset and one epoch, the same code path.
"""

import os
import sys
import time

from imcap.utils.quiet import start_tensorflow  # noqa: E402

start_tensorflow()  # before Keras, without TensorFlow's start-up noise

from imcap.evaluation import grounding  # noqa: E402
from imcap.evaluation.attention_file import read_attention  # noqa: E402
from imcap import plot_curves, test as test_script, train  # noqa: E402
from imcap.coco_caption import eval_caps  # noqa: E402
from imcap.evaluation.scoring import best_reference_scores, load_ground_truth  # noqa: E402
from imcap.training.run_folder import RunFolder  # noqa: E402
from imcap.data import make_shapes  # noqa: E402
from imcap.utils import prepro_coco  # noqa: E402
from imcap.utils.cli import ArgumentParser  # noqa: E402
from imcap.utils.fileio import write_json_atomic  # noqa: E402
from imcap.data.loader import CaptionData  # noqa: E402

FULL = {"num_train": 7600, "num_restval": 100, "num_val": 100, "num_test": 500,
        "image_size": 128, "nepochs": 10, "scst_epochs": 3}
QUICK = {"num_train": 60, "num_restval": 4, "num_val": 12, "num_test": 12, "image_size": 64,
         "nepochs": 1, "scst_epochs": 1}
# the model and training recipe (see README: "The demo")
TRAIN_FLAGS = ["--sgate", "-cnn_weights", "none", "-cnn_layer", "conv4_block6_out",
               "-emb_dim", "128", "-z_dim", "128", "-lstm_dim", "128", "-sent_dropout", "0.1",
               "-standardize", "position", "--position_embedding", "-lr", "2e-3", "-decay",
               "2e-3", "-bs", "40", "-seq_per_img", "1", "--precompute_feats", "-ftnepochs",
               "0", "-pat", "6",
               "-es_metric", "CIDEr", "--log_term"]
SCST_FLAGS = ["-scst_lr", "2.5e-4", "-scst_sample_n", "5"]
EXAMPLES = 4


class Steps:
    """Prints each step's number, name and elapsed time (progress visible throughout)."""

    def __init__(self, total):
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def __call__(self, name):
        self.done += 1
        print(f"\n== demo step {self.done}/{self.total}: {name} "
              f"({time.perf_counter() - self.start:.0f} s so far)", flush=True)

    @property
    def seconds(self):
        return time.perf_counter() - self.start


def example_figures(attention, vocabulary, data, out_dir, count):
    """Attention figures of the first ``count`` captions of ``attention`` (``read_attention``),
    over their images in ``data`` (the split they caption); returns their paths."""
    from imcap.evaluation.attention_maps import attention_figure

    index = {int(image_id): n for n, image_id in enumerate(data.image_ids)}
    paths = []
    for n, image_id in enumerate(attention["image_id"][:count].tolist()):
        words = vocabulary.ids_to_words(attention["words"][n], keep_end=True)
        image = data.read_images([index[image_id]])[0]
        path = os.path.join(out_dir, f"example_{n + 1}_image{image_id}.png")
        attention_figure(image, words, attention["alpha"][n, :len(words)],
                         attention["beta"][n, :len(words)], sig=0.5, th=0.2, path=path)
        paths.append(path)
    return paths


def run(out, quick=False, seed=123):
    sizes = QUICK if quick else FULL
    steps = Steps(8)
    shapes_dir, run_dir = os.path.join(out, "shapes"), os.path.join(out, "run")
    figures = os.path.join(out, "figures")
    os.makedirs(figures, exist_ok=True)
    run = RunFolder(run_dir, "model")
    json_path, h5_path = run.data_file("shapes.json"), run.data_file("shapes.h5")
    common = ["-data_folder", run_dir, "-json_file", "shapes.json", "-h5file", "shapes.h5",
              "-imsize", str(sizes["image_size"]), "-seed", str(seed)]

    steps("generate the synthetic shapes set (MS COCO layout)")
    make_shapes.generate(shapes_dir, num_train=sizes["num_train"],
                         num_restval=sizes["num_restval"], num_val=sizes["num_val"],
                         num_test=sizes["num_test"], image_size=sizes["image_size"])
    steps("prepro_coco.py --coco_path (vocabulary, HDF5, ground truth)")
    prepro_coco.main(prepro_coco.parse_params([
        "--coco_path", shapes_dir, "--splits_dir", os.path.join(shapes_dir, "splits"),
        "--imsize", str(sizes["image_size"]), "--output_json", json_path,
        "--output_h5", h5_path]))
    steps(f"train.py --sgate: stage 1 ({sizes['nepochs']} epochs at most), then self-critical "
          f"training ({sizes['scst_epochs']})")
    train.main(common + TRAIN_FLAGS + SCST_FLAGS + ["-nepochs", str(sizes["nepochs"]),
                                                    "-scst_epochs", str(sizes["scst_epochs"])])
    steps("test.py on the test split: greedy, then beam search 3, of both models")
    results = {}
    for name, flags in (("xe_", []), ("", ["--scst"])):
        results[f"{name}greedy"] = test_script.main(common + flags + ["--save_attention"])
        results[f"{name}beam3"] = test_script.main(common + flags + ["-bsize", "3"])
    steps("eval_caps.py: BLEU, METEOR, ROUGE_L, CIDEr")
    gt = json_path.replace(".json", "_test_gt.json")
    scores = {name: eval_caps.evaluate(path, gt)["overall"] for name, path in results.items()}
    ceiling, _ = best_reference_scores(load_ground_truth(gt))
    steps("grounding: pointing accuracy and sentinel weights")
    objects, image_sizes = grounding.load_objects(
        os.path.join(shapes_dir, "annotations", "instances_val2014.json"))
    ground = {}
    for name in ("xe_", ""):
        attention, vocabulary = read_attention(
            results[f"{name}greedy"].replace(".json", "_attention.h5"))
        ground[name] = grounding.grounding_metrics(attention, vocabulary, objects, image_sizes)
    steps("figures: example captions with attention maps, training curves")
    example_paths = example_figures(attention, vocabulary,
                                    CaptionData(h5_path, json_path, "test"), figures, EXAMPLES)
    curves = os.path.join(figures, "training_curves.png")
    plot_curves.plot_curves(run.read_state(), "CIDEr", curves)
    steps("summary")
    # the final (self-critical) model's greedy captions, then the other scores
    summary = {key: scores["greedy"][key] for key in ("CIDEr", "Bleu_4", "METEOR", "ROUGE_L")}
    summary.update({"CIDEr_beam3": scores["beam3"]["CIDEr"],
                    "CIDEr_xe": scores["xe_greedy"]["CIDEr"],
                    "CIDEr_xe_beam3": scores["xe_beam3"]["CIDEr"]})
    grounding_keys = ("pointing", "pointing_chance", "pointing_within_one_cell", "beta_visual",
                      "beta_nonvisual")
    summary.update({key: ground[""][key] for key in grounding_keys})
    summary.update({f"{key}_xe": ground["xe_"][key] for key in grounding_keys})
    summary.update({"seconds": round(steps.seconds, 1), "scores": scores,
                    "CIDEr_best_reference": ceiling, "grounding": ground[""],
                    "grounding_xe": ground["xe_"], "figures": example_paths + [curves],
                    "results": results, "quick": quick, "cnn_weights": "none",
                    "model": run.best("scst"), "model_xe": run.best()})
    summary_path = os.path.join(out, "summary.json")
    write_json_atomic(summary_path, summary)
    print_table(summary)
    print(summary_path)
    return summary


def _fmt(value):
    return "-" if value is None else f"{value:.3f}"


def print_table(summary):
    print("\n| model, decoding | CIDEr | BLEU-4 | METEOR | ROUGE_L |\n"
          "| --- | --- | --- | --- | --- |")
    for name, s in summary["scores"].items():
        label = ("cross-entropy, " if name.startswith("xe_") else "self-critical, ") + \
            name.removeprefix("xe_")
        print(f"| {label} | {_fmt(s['CIDEr'])} | {_fmt(s['Bleu_4'])} | {_fmt(s['METEOR'])} | "
              f"{_fmt(s['ROUGE_L'])} |")
    print(f"\n(each test image captioned by its best own reference would score CIDEr "
          f"{_fmt(summary['CIDEr_best_reference'])})")
    for name, end in (("self-critical", ""), ("cross-entropy", "_xe")):
        print(f"\n{name} model: pointing {_fmt(summary['pointing' + end])} (chance "
              f"{_fmt(summary['pointing_chance' + end])}, within one cell "
              f"{_fmt(summary['pointing_within_one_cell' + end])}); mean beta on visual words "
              f"{_fmt(summary['beta_visual' + end])}, on non-visual words "
              f"{_fmt(summary['beta_nonvisual' + end])}")
    print(f"\n{summary['seconds']:.0f} s in all")
    print("figures:\n" + "\n".join(f"  {p}" for p in summary["figures"]))


def main(argv=None):
    parser = ArgumentParser(prog="demo.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo", help="output folder")
    parser.add_argument("--quick", action="store_true",
                        help="a small dataset and one epoch (CI), the same code path")
    parser.add_argument("--seed", type=int, default=123,
                        help="train.py's -seed (weights, dropout, caption order); the data stay "
                             "the same")
    args = parser.parse_args(argv)
    try:
        run(args.out, args.quick, args.seed)
    except SystemExit as e:
        if e.code:
            print("demo: a step failed (its error is above)", file=sys.stderr)
        raise


if __name__ == "__main__":
    main()
