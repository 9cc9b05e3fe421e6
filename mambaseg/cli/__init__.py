"""Command-line interface: argument parsing and progress display only; the logic lives in the stages."""
