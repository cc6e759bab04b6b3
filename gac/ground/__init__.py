"""Stage 3: TerraMind grounding with LoRA (S1 + opt_v2 -> opt_v3); trained through gac.tuning."""
