"""The workspace: every path and file name of it, and the pipeline as a Python API."""
