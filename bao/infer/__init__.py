"""Inference: multi-scale + flip maps, threshold-free pseudo-labels, the threshold baseline."""
