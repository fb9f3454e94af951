"""The version of layerwatch, in a leaf module: read by the package root, by modules that
record it (``run.json``) and by ``pyproject.toml``, without importing the package's names."""

__version__ = "0.2.0"
