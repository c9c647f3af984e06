"""Experiments over many runs: sweeps (grids of chained runs) and their results tables and plots."""
