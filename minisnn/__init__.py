"""minisnn: a numpy-first reference implementation of Sub-bit Neural Networks."""

import os

# numba's parallel kernels run on OpenMP, whose idle workers otherwise spin
# and starve the BLAS threads that run between them on a 2-core machine;
# set before numba loads the OpenMP runtime (a user's own setting wins).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

__version__ = "0.1.0"
