"""What leaves a run: contours, RTSTRUCT and DICOM-SEG writers, the model package and inference on new DICOM."""
