"""Keep OpenVINO's and NNCF's usage telemetry off inside EdgeSDK processes.

Why it matters (this was the hang of `make test` on a fresh machine): `openvino_telemetry`,
which `ov.convert_model` and NNCF both use, is opt-out. With no consent file in $HOME it sends
every event from a background thread that *forks* a multiprocessing child to do the HTTP
request (and, offline, waits for it to time out). Each fork runs OpenBLAS's atfork handler,
which tears down its thread pool while other threads run; OpenBLAS 0.3.30/0.3.31 (the numpy
2.3/2.4 wheels) then can spin forever in the next threaded BLAS call (OpenMathLib/OpenBLAS#5520,
numpy#30092): `np.linalg.svd` in low-rank factorization never returned. The telemetry declines
itself when CI=true, which is why CI never saw the hang and a user's shell did.

An edge SDK should not phone home on its users' behalf anyway. Set EDGESDK_ENGINE_TELEMETRY=1
to leave the engines' own telemetry setting in force.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger("converters")
ENV_KEEP = "EDGESDK_ENGINE_TELEMETRY"
_disabled = False


def disable() -> bool:
    """Decline openvino_telemetry for this process (idempotent). Returns True when it is off."""
    global _disabled
    if _disabled:
        return True
    if os.environ.get(ENV_KEEP) == "1":
        return False
    try:
        from openvino_telemetry import main as telemetry_main
        from openvino_telemetry.utils import opt_in_checker
    except ImportError:  # no telemetry package: nothing can be sent
        _disabled = True
        return True

    def _declined(self, *args, **kwargs):
        return opt_in_checker.ConsentCheckResult.DECLINED

    # Every (re-)initialization of the Telemetry singleton asks this check first.
    opt_in_checker.OptInChecker.check = _declined
    # A singleton made before this call (the user imported openvino.tools first) stops too.
    instance = getattr(telemetry_main.Telemetry, "_SingletonMetaClass__single_instance", None)
    if instance is not None:
        instance.consent = False
    _disabled = True
    log.debug("OpenVINO/NNCF telemetry declined for this process (set %s=1 to keep it)", ENV_KEEP)
    return True
