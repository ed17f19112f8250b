"""Seeded synthetic head-and-neck DICOM-RT cohorts with analytic ground truth."""

SYNTHETIC_MANUFACTURER = "tsretrain synthetic"
"""The DICOM Manufacturer of every file the generator writes: a report recognises synthetic data by it."""
