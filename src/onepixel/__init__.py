"""onepixel: one-pixel attack robustness assessment for image classifiers."""

__version__ = "0.1.0"
