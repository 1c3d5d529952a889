"""Everything a run writes: atomic files, checkpoints, log.csv, visualizations, curves, report, TensorBoard, progress."""
