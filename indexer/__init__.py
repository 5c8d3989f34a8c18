"""indexer stage of i2i."""
