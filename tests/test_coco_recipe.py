"""The README's MS COCO recipe, run as written with bash, on a small COCO-layout set.

Only sizes change: 64 px instead of 256, ResNet-50 cut at conv2_block3_out (a 16 x 16 grid;
the full network is 100 MB per checkpoint), 2 epochs of stage 1 and 1 of stage 2, batches of 8, random CNN weights (ImageNet
weights cannot be downloaded here). Greedy decoding is called more than once per decoder here
(the validation of stage 1's epoch 2, test.py's second batch); issue 13's failure of that at
224 px has its own test (``test_decoding.test_the_default_encoder_decodes_from_images_more_than_once``).
"""

import json
import os
import re
import subprocess
import sys

import pytest

from imcap.data import make_shapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {"train.py": "-imsize 64 -cnn_weights none -cnn_layer conv2_block3_out -nepochs 2 -ftnepochs 1 -bs 8",
         "test.py": "-bs 8"}


def readme_recipe():
    """The shell block of the README's "MS COCO, end to end" section that runs prepro_coco.py."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    section = text[text.index("## MS COCO, end to end"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```\n(.*?)```", section, re.S)
    return next(block for block in blocks if "prepro_coco.py" in block)


def with_sizes(recipe, coco, splits, data):
    """The recipe with its paths pointed at the test's folders and the test's sizes."""
    recipe = recipe.replace("--imsize 256", "--imsize 64")
    lines = []
    for line in recipe.replace("\\\n", " ").splitlines():
        if line.startswith("export COCO="):
            line = f"export COCO={coco} SPLITS={splits} DATA={data}"
        for script, flags in SIZES.items():
            if line.startswith(f"python {script} "):
                command, _, comment = line.partition("#")
                line = f"{command.rstrip()} {flags}"
        lines.append(line)
    return "\n".join(["set -euo pipefail", f"cd {REPO}"] + lines)


@pytest.mark.slow
def test_the_readme_coco_recipe_runs_as_written(tmp_path):
    recipe = readme_recipe()
    assert "cd imcap/utils" in recipe and "cd coco_caption" in recipe
    assert "--cnntrain -bsize 3" in recipe
    coco = tmp_path / "COCO"
    make_shapes.generate(str(coco), num_train=8, num_restval=0, num_val=8, num_test=10,
                         image_size=64, seed=5)
    data = tmp_path / "coco_run"
    script = with_sizes(recipe, coco, coco / "splits", data)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                          timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    with open(data / "models" / "model_state.json") as f:
        stages = json.load(f)["stages"]
    for stage, epochs in (("frozen", 2), ("finetune", 1)):
        assert stages[stage]["done"] and stages[stage]["epochs_done"] == epochs
        assert [h["epoch"] for h in stages[stage]["history"]] == list(range(1, epochs + 1))
    log_file = data / "logs" / "model.log"
    log = log_file.read_text()
    epoch = r"stage {} epoch {}: loss [0-9.]+, val CIDEr [0-9.]+( \(best\))?, [0-9]+ s"
    for stage, epoch_of in (("frozen", "1/2"), ("frozen", "2/2"), ("finetune", "1/1")):
        line = epoch.format(stage, epoch_of)
        assert re.search(line, log) and re.search(line, done.stdout), line  # log and terminal
    # imcap_keras' `python train.py --sgate` from imcap/: the log's path and one line per epoch in
    # the terminal, no TensorFlow start-up noise, no Keras progress lines
    assert f"logging to {log_file}" in done.stdout
    assert "stage frozen: 2 epochs" in done.stdout
    for noise in ("absl::InitializeLog", "cuInit", "cudart_stub", "Epoch 1/2"):
        assert noise not in done.stdout + done.stderr, noise
    assert (data / "logs" / "tensorboard" / "model_frozen").is_dir()
    results = {}
    for method in ("greedy", "beam3"):
        with open(data / "results" / f"model_cnntrain_best_test_{method}.json") as f:
            results[method] = json.load(f)
        assert len(results[method]) == 10  # two batches: 8 and 2
        assert len({r["image_id"] for r in results[method]}) == 10
    with open(data / "results" / "model_cnntrain_best_test_beam3_scores.json") as f:
        scores = json.load(f)
    assert set(scores["overall"]) >= {"Bleu_4", "METEOR", "ROUGE_L", "CIDEr"}
    assert "PTBTokenizer" not in done.stdout + done.stderr
