"""Organ dictionaries: the versioned label sets a model learns, and how raw ROI names map onto them."""
