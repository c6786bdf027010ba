"""Data in: BraTS NIfTI cases and Kaggle slice files -> one HDF5 store -> torch slices."""
