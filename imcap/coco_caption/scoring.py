"""Caption metrics with pycocoevalcap's own tokenizer and scorers (the numbers COCOEvalCap gives).

BLEU-1..4, METEOR, ROUGE_L and CIDEr. The PTB tokenizer and METEOR run Java (as in
pycocoevalcap); ask only for the metrics you need, METEOR's Java start-up takes seconds.
"""

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from imcap.utils.fileio import DataError, load_json

METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


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
    return captions


def score_captions(ground_truth, results, metrics=METRICS):
    """Scores ``results`` ``{image_id: caption}`` against ``ground_truth``
    ``{image_id: [captions]}`` on the images of ``results``.

    Returns ``(overall {metric: value}, per_image {image_id: {metric: value}})``.
    """
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; expected some of {', '.join(METRICS)}.")
    ids = sorted(results)
    missing = [i for i in ids if i not in ground_truth]
    if missing:
        raise DataError(f"{len(missing)} result image ids have no ground truth, e.g. "
                        f"{missing[:5]}")
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in ground_truth[i]] for i in ids})
    res = tokenizer.tokenize({i: [{"caption": results[i]}] for i in ids})
    scorers = []
    if any(m.startswith("Bleu") for m in metrics):
        scorers.append((Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]))
    if "METEOR" in metrics:
        scorers.append((Meteor(), ["METEOR"]))
    if "ROUGE_L" in metrics:
        scorers.append((Rouge(), ["ROUGE_L"]))
    if "CIDEr" in metrics:
        scorers.append((Cider(), ["CIDEr"]))
    overall, per_image = {}, {i: {} for i in ids}
    for scorer, names in scorers:
        score, scores = scorer.compute_score(gts, res)
        if len(names) == 1:
            score, scores = [score], [scores]
        for name, value, values in zip(names, score, scores):
            if name in metrics:
                overall[name] = float(value)
                for image_id, v in zip(ids, values):
                    per_image[image_id][name] = float(v)
    return overall, per_image
