"""retriever stage of i2i."""
