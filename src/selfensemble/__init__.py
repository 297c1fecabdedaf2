"""selfensemble: ask one question through N paraphrases and fuse them into one answer."""

__version__ = "0.1.0"
