"""``eval_caps.py``, at imcap_keras' path: scores a COCO result JSON (see
``imcap.evaluation.scoring``)."""
