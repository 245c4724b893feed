"""stockpush: a live stock-price push service."""

__version__ = "0.1.0"
