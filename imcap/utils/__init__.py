"""Helpers every package may use: file input and atomic output (``fileio``), command-line
parsing and one-line errors (``cli``), a quiet TensorFlow start (``quiet``); and imcap_keras'
``prepro_coco.py``, kept at its path."""
