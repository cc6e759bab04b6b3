"""Stage-1 fine-tuning (params `stage1_finetune`): stage 1's generator (S1 alone) tuned with LoRA through gac.tuning.

Kept apart from stage 3 (gac.ground): its own params section, so editing
stage 3's training never re-fine-tunes stage 1, and stage 1 imports nothing
from stage 3's package.
"""
