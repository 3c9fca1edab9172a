"""The onepixel version, in a module of its own so that any layer can read it without importing
the package root (``onepixel.__version__`` re-exports it). Keep it equal to pyproject.toml's."""

__version__ = "0.1.0"
