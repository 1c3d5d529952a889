"""Shared by training and use: the one inference routine, tiling, the confusion matrix and validation."""
