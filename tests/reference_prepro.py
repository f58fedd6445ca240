"""An independent model of imcap_keras' prepro_coco.py (Python 3), written from its documented
behaviour with different means (regular expressions, Counter, per-caption lists), to check
imcap.utils.prepro_coco against. It shares no code with imcap."""

import collections
import random
import re
import string

_PUNCTUATION = re.compile("[" + re.escape(string.punctuation) + "]")


def reference(raw_images, threshold=5, max_length=18, num_val=2000, num_test=2000):
    """Returns (ix_to_word, images, labels, start, end, lengths) as plain Python lists."""
    images = list(raw_images)
    random.seed(123)
    random.shuffle(images)
    sentences = []
    for image in images:
        sentences.append([["<start>"] + _PUNCTUATION.sub("", c.lower()).split() + ["<eos>"]
                          for c in image["captions"]])
    counter = collections.Counter(w for per_image in sentences for s in per_image for w in s)
    words = [w for w in counter if counter[w] > threshold]
    if any(counter[w] <= threshold for w in counter):
        words = words + ["UNK"]
    index = {w: k for k, w in enumerate(words, start=1)}
    labels, start, end, lengths = [], [], [], []
    for per_image in sentences:
        start.append(len(labels) + 1)
        for s in per_image:
            ids = [index[w] if counter[w] > threshold else index["UNK"] for w in s][:max_length]
            lengths.append(len(ids))
            labels.append(ids + [0] * (max_length - len(ids)))
        end.append(len(labels))
    out_images = []
    for k, image in enumerate(images):
        split = "val" if k < num_val else "test" if k < num_val + num_test else "train"
        entry = {"split": split, "file_path": image["file_path"]}
        if "id" in image:
            entry["id"] = image["id"]
        out_images.append(entry)
    ix_to_word = {str(k): w for k, w in enumerate(words, start=1)}
    return ix_to_word, out_images, labels, start, end, lengths
