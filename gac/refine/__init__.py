"""Stage 2: Prithvi-EO-2.0 + LoRA refiner (opt_v1 -> opt_v2)."""
