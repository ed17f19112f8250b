"""Seeded synthetic head-and-neck DICOM-RT cohorts with analytic ground truth."""
