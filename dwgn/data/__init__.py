"""Data: synthetic weather, the benchmark sets' layouts, datasets and the embedded demo set."""
