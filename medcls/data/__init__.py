"""Data: readers, dataset layouts, splits and the in-memory image cache."""
