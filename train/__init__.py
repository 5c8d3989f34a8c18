"""train stage of i2i."""
