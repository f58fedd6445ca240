"""``eval_caps.py``, at the seed's path: scores a COCO result JSON (see
``imcap.evaluation.scoring``)."""
