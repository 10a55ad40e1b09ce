"""Data sets: where they come from (sources.py) and the one format they are stored in (store.py)."""
