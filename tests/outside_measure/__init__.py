"""Measurements written outside the layerwatch package, registered through the
``layerwatch.measurements`` entry-point group (see tests/test_outside_measure.py)."""
