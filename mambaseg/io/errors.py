"""Exceptions raised by the io layer."""


class ImageReadError(ValueError):
    """A file or folder exists but cannot be read as an image (truncated, corrupt, or unsupported content)."""
