"""Point clouds: PointCLIP depth maps (projection.py) and the ModelNet40 / ScanObjectNN loaders."""
