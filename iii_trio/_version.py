"""The package version, announced to the engine as the SDK version.

This is the one place the version is written: ``pyproject.toml`` reads it from here
(``[tool.hatch.version]``), and ``iii_trio.__version__`` and the installed distribution's
metadata (``importlib.metadata.version("iii-trio")``) both say the same.
"""

__version__ = "0.1.0"
"""This release of iii-trio (``iii_trio`` and ``engine_sim`` are versioned together)."""
