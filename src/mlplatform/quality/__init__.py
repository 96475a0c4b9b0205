"""Model quality beyond input drift: realized performance, CBPE estimates, segments and fairness.

Pure functions over numpy arrays, shared by drift detection (per window) and the retraining gate
(per segment): no I/O, no service imports.
"""
