"""The pipeline definition: stages in order, their configuration, and the local runner."""
