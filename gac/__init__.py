"""GAC: SAR-to-optical translation (Sentinel-1 -> Sentinel-2 L2A) in three foundation-model stages.

Importing `gac` is cheap: torch and terratorch are imported inside the functions
that need them, so the CLI's `--help` and params errors stay instant.
"""

__version__ = "0.1.0"
