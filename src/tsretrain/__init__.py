"""tsretrain: retrain TotalSegmentator-style nnU-Net v2 models on head-and-neck DICOM-RT cohorts."""

__version__ = "0.1.0"
