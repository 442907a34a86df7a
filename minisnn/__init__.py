"""minisnn: a numpy-first reference implementation of Sub-bit Neural Networks.

Importing the package changes nothing in the host process; the
command-line tools tune it first (:func:`minisnn.runtime.tune_process`).
"""

__version__ = "0.1.0"
