"""Keep numpy's BLAS on one thread in conversion processes.

OpenBLAS 0.3.31 (numpy 2.4 wheels) can spin forever in `exec_blas` once its worker pool is in a
bad state: after a fork (see engine_telemetry) and, as seen here, after OpenVINO and LiteRT have
run their own thread pools in the same process (a test of `convert` on a .tflite hung in
`np.linalg.norm` of the accuracy check, every time after host detection had probed OpenVINO).
The numpy work in conversion is small (metrics, SVDs of layer weights, rounding) next to the
engines', so one BLAS thread costs nothing measurable and removes the threaded path that hangs.
`EDGESDK_BLAS_THREADS=N` sets another count.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)
_limiter = None


def limit_blas_threads() -> None:
    """Set numpy's BLAS pool to EDGESDK_BLAS_THREADS (default 1) for the rest of the process."""
    global _limiter
    if _limiter is not None:
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a device install without the converters' extras: nothing to limit here
        return
    count = int(os.environ.get("EDGESDK_BLAS_THREADS", "1") or 1)
    _limiter = threadpool_limits(limits=max(1, count), user_api="blas")
    log.debug("numpy BLAS limited to %d thread(s)", count)
