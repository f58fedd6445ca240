"""Score a COCO result file, as imcap_keras' README runs it:

    cd imcap/coco_caption && python eval_caps.py -results_file results.json -ann_file gt_file.json

(or ``python -m imcap.coco_caption.eval_caps``, or ``imcap-eval``). BLEU-1..4, METEOR, ROUGE_L
and CIDEr with pycocoevalcap's own tokenizer and scorers — the numbers COCOEvalCap gives —
and SPICE with ``--spice`` when its Stanford models are present. Only the images in the
results are scored (imcap_keras' ``params['image_id'] = cocoRes.getImgIds()``). Overall and
per-image scores go to ``-out_file`` (default: the results file with ``_scores.json``).
"""

import os
import sys

if __name__ == "__main__" and not __package__:
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from imcap.evaluation.scoring import (  # noqa: E402
    METRICS, SPICE, load_ground_truth, score_captions, spice_missing)
from imcap.utils.cli import ArgumentParser, one_line_errors  # noqa: E402
from imcap.utils.fileio import DataError, load_json, write_json_atomic  # noqa: E402


def load_results(path):
    """``{image_id: caption}`` from a COCO result file ``[{"image_id": int, "caption": str}]``;
    errors name the file, the entry and what was expected."""
    data = load_json(path, "results file")
    if not isinstance(data, list):
        raise DataError(f"results file {path}: expected a list of {{\"image_id\": int, "
                        f"\"caption\": str}}, got a JSON {type(data).__name__}")
    results = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise DataError(f"results file {path}: entry {i} is not an object")
        image_id, caption = entry.get("image_id"), entry.get("caption")
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise DataError(f"results file {path}: entry {i}: 'image_id' must be an integer, "
                            f"got {image_id!r}")
        if not isinstance(caption, str):
            raise DataError(f"results file {path}: entry {i} (image {image_id}): 'caption' "
                            f"must be a string, got {caption!r}")
        if not caption.strip():
            raise DataError(f"results file {path}: entry {i} (image {image_id}): the caption "
                            f"is empty")
        if image_id in results:
            raise DataError(f"results file {path}: entry {i}: image_id {image_id} appears "
                            f"twice (one caption per image)")
        results[image_id] = caption
    if not results:
        raise DataError(f"results file {path}: no captions to score")
    return results


def evaluate(results_file, ann_file, spice=False, out_file=None, log=print):
    """Scores ``results_file`` against ``ann_file``; writes and returns the scores dict."""
    ground_truth = load_ground_truth(ann_file)
    results = load_results(results_file)
    unknown = [i for i in results if i not in ground_truth]
    if unknown:
        raise DataError(f"results file {results_file}: {len(unknown)} image ids are not in "
                        f"{ann_file}, e.g. {unknown[:5]}")
    metrics = list(METRICS)
    if spice:
        why = spice_missing()
        if why:
            log(f"eval_caps: SPICE skipped: {why}")
        else:
            metrics.append(SPICE)
    log(f"eval_caps: scoring {len(results)} of the {len(ground_truth)} images of {ann_file}")
    overall, per_image = score_captions(ground_truth, results, metrics)
    scores = {"overall": overall, "num_images": len(results),
              "num_annotated_images": len(ground_truth),
              "results_file": os.path.abspath(results_file),
              "ann_file": os.path.abspath(ann_file),
              "per_image": [dict(image_id=i, **v) for i, v in per_image.items()]}
    out_file = out_file or os.path.splitext(results_file)[0] + "_scores.json"
    write_json_atomic(out_file, scores)
    scores["out_file"] = out_file
    return scores


def get_parser():
    parser = ArgumentParser(prog="eval_caps.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("-results_file", "--results_file", required=True,
                        help="COCO result JSON [{\"image_id\": int, \"caption\": str}]")
    parser.add_argument("-ann_file", "--ann_file", required=True,
                        help="COCO caption annotations (e.g. the _test_gt.json prepro_coco.py "
                             "writes, or captions_val2014.json)")
    parser.add_argument("-out_file", "--out_file", default=None,
                        help="where to write the scores (default: RESULTS_scores.json)")
    parser.add_argument("--spice", action="store_true",
                        help="also SPICE (needs Java and Stanford CoreNLP's models)")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    with one_line_errors("eval_caps"):
        scores = evaluate(args.results_file, args.ann_file, args.spice, args.out_file,
                          log=lambda message: print(message, file=sys.stderr))
    for name, value in scores["overall"].items():
        print(f"{name}: {value:.3f}")
    print(f"scores of {scores['num_images']} images written to {scores['out_file']}")


if __name__ == "__main__":
    main()
