"""Analyses that read a trained run directory and write results and figures under it."""
