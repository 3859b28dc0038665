"""The package version, which the hello of both sides announces."""

__version__ = "0.1.0"
