"""Whole-workspace workflows above every package: the demo, the update job, doctor (checks)
and repair."""
