"""Outputs: Parquet shards, manifest and dataset card, rebuilt from the journal."""
