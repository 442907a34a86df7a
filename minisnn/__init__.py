"""minisnn: a numpy-first reference implementation of Sub-bit Neural Networks."""

__version__ = "0.1.0"
