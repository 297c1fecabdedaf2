"""Dataset loaders; each yields a Dataset of Items (see base.py)."""
