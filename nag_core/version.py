"""The package version, in a module of its own so that the record writer can name it without
importing the package's lazy front door (``nag_core/__init__``)."""

__version__ = "0.1.0"
