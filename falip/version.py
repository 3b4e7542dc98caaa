"""The package version, in one place (read by the package face and the provenance of every run)."""
__version__ = "0.1.0"
