"""Evaluation: caption a split (``captioning``), score it (``scoring``), grounding metrics
(``grounding``), attention figures (``attention_maps``) and the attention file
(``attention_file``)."""
