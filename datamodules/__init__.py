"""rnnbench data: raw readers, dataset preparation into artifacts, and the DataModule."""
