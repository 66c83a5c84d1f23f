"""Datasets, labels, the SynthCity generator, class statistics, sampling and overlap analysis."""
