"""Array kernels: no autograd inside, plain ndarrays in and out.

OpenBLAS (GEMMs) and Numba's OpenMP pool (depthwise, batch norm) share the same cores. OpenMP
threads that spin after a parallel region starve the next GEMM's threads and the other way
round (8 ms instead of 0.6 ms for a small layer was measured on 2 cores), so OpenMP is told to
sleep when idle unless the user chose otherwise. It must be set before Numba starts its pool.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
