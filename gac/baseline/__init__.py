"""The supervised baseline: a pix2pix-style U-Net trained S1 -> S2L2A on the same tiles as GAC's stages."""
