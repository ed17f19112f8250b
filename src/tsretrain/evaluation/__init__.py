"""Metrics of predictions against reference label maps, their statistics, figures and the run report."""
