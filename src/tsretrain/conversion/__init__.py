"""DICOM CT + RTSTRUCT discovery and conversion to NIfTI image and label map."""
