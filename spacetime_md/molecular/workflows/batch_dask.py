"""Connecting to Dask distributed for a batch, and shutting the client down quietly.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from spacetime_md.errors import SpacetimeMDError

logger = logging.getLogger(__name__)


def _connect(scheduler: str | None, workers: int | None, dashboard: bool):
    """A Dask client (and the local cluster it owns, if any)."""
    import warnings

    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise SpacetimeMDError(
            "batch: expected dask.distributed to be installed for parallel runs (pip install 'spacetime-md[cluster]'), "
            f"got {type(exc).__name__}: {exc}; or use workers=0 (serial)"
        ) from None
    if scheduler is not None:
        try:
            return Client(scheduler, timeout="10s"), None
        except (OSError, TimeoutError) as exc:
            raise ValueError(
                f"scheduler: expected the address of a running Dask scheduler, got {scheduler!r} ({' '.join(str(exc).split())})"
            ) from None
    import dask

    n = workers if workers is not None else (os.cpu_count() or 1)
    # Dask's nannies set MALLOC_TRIM_THRESHOLD_=65536 in their workers; with the many small
    # tensors of a geodesic solve that made it 2-4x slower here (measured), so unset it.
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}), \
            warnings.catch_warnings():
        # The scheduler's HTTP server moves to a free port when 8787 is taken (the link printed
        # says where); that is no reason for a multi-line warning.
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=":8787" if dashboard else None)
    try:
        return Client(cluster), cluster
    except BaseException:
        close_dask(None, cluster)
        raise


#: Loggers whose records while a client and its cluster shut down are connection noise (e.g. a
#: ``CommClosedError`` traceback from a worker stream that closes after the scheduler).
SHUTDOWN_LOGGERS = ("distributed", "tornado", "asyncio")


@contextlib.contextmanager
def _quiet_shutdown(level: int = logging.CRITICAL):
    """Raise :data:`SHUTDOWN_LOGGERS` and their existing children to ``level`` and ignore
    warnings; restored on exit. Only for the teardown: task errors are reported through their
    futures (and recorded in the manifest) before it starts."""
    import warnings

    names = set(SHUTDOWN_LOGGERS) | {name for name in logging.root.manager.loggerDict
                                     if name.split(".")[0] in SHUTDOWN_LOGGERS}
    saved = {}
    for name in names:
        log = logging.getLogger(name)
        saved[name] = log.level
        log.setLevel(max(level, log.getEffectiveLevel()))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, old in saved.items():
            logging.getLogger(name).setLevel(old)


def close_dask(client: Any, cluster: Any, timeout: float = 20.0) -> None:
    """Close ``client``, then the local ``cluster`` it owns (either may be ``None``), quietly.

    The client goes first, so the scheduler does not see it vanish with the workers; each close
    gets ``timeout`` seconds. Worker processes can take longer than Dask's 4 s to exit on a busy
    machine and are then killed by their nanny, and streams that close in the wrong order log
    ``CommClosedError`` tracebacks: neither matters once every result is on disk, so the
    ``distributed`` loggers are raised to CRITICAL meanwhile and a failing close is logged at
    DEBUG level instead of raised.
    """
    with _quiet_shutdown():
        for what, obj in (("client", client), ("cluster", cluster)):
            if obj is None:
                continue
            try:
                obj.close(timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - shutdown noise (CommClosedError, TimeoutError, OSError)
                logger.debug("closing the Dask %s: %s: %s", what, type(exc).__name__, exc)
