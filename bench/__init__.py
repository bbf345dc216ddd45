"""Ratio benchmarks for livekit-plugins-metadata (``uv run python -m bench``)."""
