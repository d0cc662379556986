"""bao-wsss: Background-aware Activation map Optimization for weakly supervised segmentation."""

__version__ = "0.1.0"
