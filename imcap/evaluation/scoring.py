"""Caption metrics with pycocoevalcap's own tokenizer and scorers (the numbers COCOEvalCap gives).

BLEU-1..4, METEOR, ROUGE_L and CIDEr. The PTB tokenizer and METEOR run Java (as in
pycocoevalcap); ask only for the metrics you need, METEOR's Java start-up takes seconds.
"""

import contextlib
import io
import os

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from imcap.utils.fileio import DataError, load_json
from imcap.utils.quiet import quiet_subprocess_stderr

METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
SPICE = "SPICE"


def load_ground_truth(path):
    """``{image_id: [caption, ...]}`` from a COCO-format caption annotation file."""
    data = load_json(path, "ground-truth caption file")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError(f"ground-truth caption file {path}: expected COCO caption annotations "
                        f"with a list 'annotations'")
    captions = {}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not isinstance(ann.get("caption"), str) \
                or "image_id" not in ann:
            raise DataError(f"ground-truth caption file {path}: annotations[{i}] needs "
                            f"'image_id' and a string 'caption'")
        captions.setdefault(ann["image_id"], []).append(ann["caption"])
    # pycocotools orders images as the 'images' list does; scoring in that order gives
    # COCOEvalCap's numbers to the last bit
    order = [image["id"] for image in data.get("images", []) if isinstance(image, dict)
             and image.get("id") in captions]
    ordered = {image_id: captions[image_id] for image_id in order}
    ordered.update((k, v) for k, v in captions.items() if k not in ordered)
    return ordered


def spice_missing():
    """None if SPICE can run, else why not (its Stanford CoreNLP models are downloaded on first
    use, which an offline machine cannot do)."""
    from pycocoevalcap.spice import get_stanford_models as models

    jar = os.path.join(models.SPICEDIR, models.SPICELIB, f"{models.JAR}.jar")
    if os.path.exists(jar):
        return None
    return (f"SPICE needs Stanford CoreNLP ({models.JAR}.jar and -models.jar) in "
            f"{os.path.dirname(jar)}; on a machine with network run "
            f"'python -m pycocoevalcap.spice.get_stanford_models' (or copy the two jars there)")


_meteor = None


def meteor():
    """pycocoevalcap's METEOR scorer, one per process: starting it (Java, loading its paraphrase
    tables) takes about 10 s here, while scoring a split takes well under a second, so every
    evaluation after the first in a process (the demo's four, early stopping on METEOR) reuses
    the running one. A scorer whose process has died, or that failed, is replaced."""
    global _meteor
    if _meteor is None or _meteor.meteor_p.poll() is not None:
        _meteor = Meteor()
    return _meteor


def _compute(scorer, gts, res):
    global _meteor
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # BLEU prints its n-gram counts
            return scorer.compute_score(gts, res)
    except Exception:
        if scorer is _meteor:  # its lock may still be held: never reuse it
            _meteor = None
        raise


def tokenize_together(*groups):
    """Each of ``groups`` (``{key: [{"caption": text}, ...]}``, as COCOEvalCap hands them to
    the PTB tokenizer) tokenised, in one Java run: the tokenizer works line by line, so this
    is what one run per group gives, without a Java start-up (0.3 s here) per group."""
    joined = {(n, key): captions for n, group in enumerate(groups)
              for key, captions in group.items()}
    with quiet_subprocess_stderr():  # Java prints "PTBTokenizer tokenized N tokens" per call
        tokens = PTBTokenizer().tokenize(joined)
    return tuple({key: tokens[(n, key)] for key in group if (n, key) in tokens}
                 for n, group in enumerate(groups))


def score_captions(ground_truth, results, metrics=METRICS):
    """Scores ``results`` ``{image_id: caption}`` against ``ground_truth``
    ``{image_id: [captions]}`` on the images of ``results``.

    Images are scored in the order of ``ground_truth`` (as COCOEvalCap does). ``SPICE`` may
    be asked for too (see ``spice_missing``).

    Returns ``(overall {metric: value}, per_image {image_id: {metric: value}})``.
    """
    unknown = sorted(set(metrics) - set(METRICS) - {SPICE})
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; expected some of {', '.join(METRICS)}.")
    ids = [i for i in ground_truth if i in results]
    missing = [i for i in results if i not in ground_truth]
    if missing:
        raise DataError(f"{len(missing)} result image ids have no ground truth, e.g. "
                        f"{missing[:5]}")
    gts, res = tokenize_together(
        {i: [{"caption": c} for c in ground_truth[i]] for i in ids},
        {i: [{"caption": results[i]}] for i in ids})
    scorers = []
    if any(m.startswith("Bleu") for m in metrics):
        scorers.append((Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]))
    if "METEOR" in metrics:
        scorers.append((meteor(), ["METEOR"]))
    if "ROUGE_L" in metrics:
        scorers.append((Rouge(), ["ROUGE_L"]))
    if "CIDEr" in metrics:
        scorers.append((Cider(), ["CIDEr"]))
    if SPICE in metrics:
        from pycocoevalcap.spice.spice import Spice
        scorers.append((Spice(), [SPICE]))
    overall, per_image = {}, {i: {} for i in ids}
    for scorer, names in scorers:
        score, scores = _compute(scorer, gts, res)
        if len(names) == 1:
            score, scores = [score], [scores]
        for name, value, values in zip(names, score, scores):
            if name in metrics:
                overall[name] = float(value)
                for image_id, v in zip(ids, values):
                    per_image[image_id][name] = v["All"]["f"] if name == SPICE else float(v)
    return overall, per_image


def best_reference_scores(ground_truth, metric="CIDEr"):
    """What a captioner that always says one of an image's own references can score.

    Each image is captioned by each of its references in turn and keeps its best; returns
    ``(mean best score, [mean score of the k-th reference for every k])``. On data whose
    references disagree this ceiling is low: no model can beat it by saying one of them.
    Images with fewer references than the most any image has take their last one for the rest.
    """
    ids = list(ground_truth)
    most = max(len(ground_truth[i]) for i in ids)
    per_reference = []
    for k in range(most):
        chosen = {i: ground_truth[i][min(k, len(ground_truth[i]) - 1)] for i in ids}
        _, per_image = score_captions(ground_truth, chosen, metrics=(metric,))
        per_reference.append([per_image[i][metric] for i in ids])
    best = [max(scores) for scores in zip(*per_reference)]
    return sum(best) / len(best), [sum(scores) / len(scores) for scores in per_reference]
