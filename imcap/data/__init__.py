"""Data: where captions and images come from (``sources``), the vocabulary, images, the
ground truth for scoring (``coco_gt``), one split as a ``tf.data`` pipeline (``loader``), the
feature cache (``features``) and the synthetic shapes set (``make_shapes``)."""
