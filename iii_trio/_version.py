"""The package version, announced to the engine as the SDK version."""

__version__ = "0.1.0"
