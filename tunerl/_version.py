"""The package version, in a module of its own so that `tunerl.core` can read it without
importing the package face (`tunerl/__init__.py`), which imports the core."""

__version__ = "0.2.0"
