"""Models: ``CaptionerConfig``, the encoder and its preprocessing, the custom layers, the
captioner, and checkpoints in and out (``saving``). See docs/architecture.md."""
