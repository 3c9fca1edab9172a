"""Error types that carry a message meant for the user.

The CLI prints these without a traceback and exits nonzero; anything else is a bug.
"""

from __future__ import annotations


class OnepixelError(Exception):
    """Base class: something the user can fix (bad input, missing file, bad option)."""


class AssetError(OnepixelError):
    """An asset is missing, cannot be downloaded, or fails its checksum."""


class ChecksumError(AssetError):
    """A file's sha256 differs from the expected one; the file is never loaded."""


class ImageError(OnepixelError):
    """An image cannot be read, or has the wrong size."""


class DatasetError(OnepixelError):
    """A dataset folder is missing, empty or malformed."""


class ModelError(OnepixelError):
    """A model cannot be loaded: unknown spec, unsupported layer, bad file."""
