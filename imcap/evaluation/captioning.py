"""Caption a split and score it: what test.py writes and what early stopping reads."""

import math
import time

import numpy as np
from tqdm import tqdm

from imcap.data.loader import reading_errors
from imcap.evaluation.scoring import score_captions
from imcap.models.preprocessing import preprocessor


def caption_split(decoder, data, batch_size, keep_attention=False, progress=True):
    """Decodes every image of ``data`` (a ``CaptionData``, of images or of cached features,
    as ``decoder`` takes them).

    Returns ``(results, attention, seconds)``: ``[{"image_id", "caption"}]`` in the split's
    order; with ``keep_attention``, ``{"image_id", "words", "alpha", "beta"}`` arrays (else
    None); and the decoding time.
    """
    key = "features" if decoder.from_features else "images"
    results, kept = [], {"image_id": [], "words": [], "alpha": [], "beta": []}
    batches = data.dataset(batch_size, preprocessor(decoder.model.config.cnn), training=False)
    start = time.perf_counter()
    for x, _, _, ids in tqdm(checked(batches), total=math.ceil(len(data) / batch_size),
                             unit="batch", desc=f"captioning {len(data)} images",
                             disable=not progress):
        out = decoder.decode(x[key], num_regions=x.get("num_regions"))
        ids = ids.numpy()
        for image_id, caption in zip(ids, decoder.to_captions(out["words"])):
            results.append({"image_id": int(image_id), "caption": caption})
        if keep_attention:
            kept["image_id"].append(ids)
            for name in ("words", "alpha", "beta"):
                kept[name].append(out[name])
    seconds = time.perf_counter() - start
    attention = {k: np.concatenate(v) for k, v in kept.items()} if keep_attention else None
    return results, attention, seconds


def checked(batches):
    """``batches``, with bad input met while reading them as one-line ``DataError``s."""
    iterator = iter(batches)
    while True:
        with reading_errors():
            try:
                batch = next(iterator)
            except StopIteration:
                return
        yield batch


def teacher_forced_captions(model, decoder, data, batch_size):
    """``[{"image_id", "caption"}]``: each step's most likely word given the reference's
    previous words (imcap_keras' ``-es_prev_words gt``), through ``model`` (the captioner, or
    its features model on cached features)."""
    results = []
    preprocess = preprocessor(decoder.model.config.cnn)
    for x, _, _, ids in checked(data.dataset(batch_size, preprocess, training=False)):
        words = np.argmax(model(x, training=False)[:, 0], axis=-1)
        for image_id, caption in zip(ids.numpy(), decoder.to_captions(words)):
            results.append({"image_id": int(image_id), "caption": caption})
    return results


def validation_score(ground_truth, results, metric):
    """``metric`` of ``results`` against ``ground_truth`` (``load_ground_truth``)."""
    captions = {r["image_id"]: r["caption"] for r in results}
    overall, _ = score_captions(ground_truth, captions, [metric])
    return overall[metric]
