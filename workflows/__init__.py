"""Whole-workspace workflows above every package: the demo, doctor (checks) and repair."""
