"""pipeline stage of i2i."""
