"""Offline RL's data: recording what env runners sample as Parquet (`OutputWriter`) and
reading it back in shuffled minibatches (`OfflineData`)."""

from tunerl.offline.output_writer import OutputWriter

__all__ = ["OutputWriter"]
