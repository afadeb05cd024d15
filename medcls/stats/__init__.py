"""Statistics: pure functions from arrays to numbers (metrics, intervals, bootstrap, calibration,
operating points, paired tests); no files, no plotting, no models."""
