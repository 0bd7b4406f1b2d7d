"""Tests of the sweep layer (tunerl.tuning, the CLI, experiments as data). A package, so
its conftest's package-scoped Ray ends with these tests."""
