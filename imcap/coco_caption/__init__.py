"""Caption evaluation against COCO-format ground truth (BLEU, METEOR, ROUGE_L, CIDEr)."""
