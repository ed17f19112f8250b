"""Talking to a cluster: submitting runs to Argo Workflows and following them."""
