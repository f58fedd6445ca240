"""Training: the run's files and state (``run_folder``), what a run is asked to do
(``config``), checkpoints saved in crash-safe order (``store``), the epoch's callbacks
(``callbacks``), validation (``validation``) and imcap_keras' stages (``trainer``)."""
