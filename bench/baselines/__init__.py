"""Baselines and peers run on the same box in the same run (issue 6)."""
