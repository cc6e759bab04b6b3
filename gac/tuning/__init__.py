"""TerraMind LoRA tuning through the one-pass differentiable path, shared by two jobs.

Stage 3 (gac.ground: S1 + opt_v2 -> S2L2A) and stage-1 fine-tuning
(gac.finetune: S1 alone) train the same way; neither package imports the
other, both import this one.
"""
