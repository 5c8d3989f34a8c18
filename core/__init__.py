"""What every stage shares: data contracts, errors, atomic I/O, safe image loading and
the evaluation metrics. Imports no stage and nothing from the CLI package `i2i`."""
