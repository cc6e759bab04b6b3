"""Stage 1: frozen TerraMind generation S1 -> S2L2A (opt_v1)."""
