"""Evaluation: metrics, ablations, plots, quicklooks and GeoTIFF exports."""
