"""Data: mixture recipes, conversation records, media decoding and batching."""
