"""Command-line entry points: thin shells over the library, with one place that turns errors into exit codes."""
