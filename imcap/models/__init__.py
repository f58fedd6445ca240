"""Encoder, custom layers and the captioner (see ../shared/DESIGN.md, "Layout")."""
