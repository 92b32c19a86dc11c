"""The collection engine: streaming input, bounded concurrency, resume, failures, metrics."""
