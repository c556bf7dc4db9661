"""A run's Prometheus metrics: made when asked for, served while it lasts, published when it ends.

The glue between the settings and ``observe.metrics_export``: it turns a port that cannot be
bound into a ConfigError (exit 2, before any request) and a Pushgateway or a metrics file
that fails at the end into a warning, since the run's own outputs are what matter.
prometheus_client is imported only here, and only for a run that wants metrics.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from anyio import get_cancelled_exc_class

from ._version import __version__
from .errors import ConfigError
from .logs import SHOWN
from .observe import Bus
from .settings import Settings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .observe.metrics import PipelineMetrics

log = logging.getLogger("customer_pipeline.metrics")
# A push happens once, as the run ends: a gateway slower than this is reported, not awaited.
PUSH_TIMEOUT_S = 10.0


def wanted(settings: Settings, registry: CollectorRegistry | None) -> bool:
    """Whether the run keeps metrics: a registry was given, or an exposition asked for."""
    return registry is not None or any(
        value is not None
        for value in (settings.metrics_port, settings.pushgateway, settings.metrics_file)
    )


@contextlib.asynccontextmanager
async def monitored(
    settings: Settings, bus: Bus, registry: CollectorRegistry | None = None
) -> AsyncIterator[PipelineMetrics | None]:
    """Count the run's events as metrics and expose them as the settings ask; yields them.

    Raises ConfigError before the run starts when the metrics port cannot be bound or the
    metrics file's folder is missing. Publishes (push, textfile) however the block ends.
    """
    if not wanted(settings, registry):
        yield None
        return
    from prometheus_client import CollectorRegistry

    from .observe import metrics_export as export
    from .observe.metrics import metrics_for

    if settings.metrics_file is not None:
        _check_folder(settings.metrics_file)
    metrics = metrics_for(registry or CollectorRegistry(), version=__version__).attach(bus)
    with contextlib.ExitStack() as stack:
        if settings.metrics_port is not None:
            host, port = settings.metrics_host, settings.metrics_port
            shown = export.live(metrics.registry)
            try:
                host, port = stack.enter_context(export.serving(shown, host, port))
            except OSError as exc:
                shown_host = f"[{host}]" if ":" in host else host
                raise ConfigError(
                    f"cannot serve metrics on {shown_host}:{port}: {exc.strerror or exc} "
                    "(--metrics-port / CUSTOMER_PIPELINE_METRICS_PORT: pick a free port, or 0 "
                    "for any; --metrics-host for the address)"
                ) from None
            shown_host = f"[{host}]" if ":" in host else host
            log.info("metrics served on http://%s:%d/metrics while the run lasts", shown_host,
                     port, extra={SHOWN: True})  # fmt: skip
        try:
            yield metrics
        except BaseException as exc:
            # A run cancelled at once still says so, within the push's own deadline.
            await _publish(settings, metrics, shield=isinstance(exc, get_cancelled_exc_class()))
            raise
        await _publish(settings, metrics, shield=False)


def _check_folder(path: Path) -> None:
    folder = path.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cannot write the metrics file {path}: its folder {folder} is missing or not "
            "writable (--metrics-file / CUSTOMER_PIPELINE_METRICS_FILE: create the folder or "
            "point it at node_exporter's textfile directory)"
        )


async def _publish(settings: Settings, metrics: PipelineMetrics, *, shield: bool) -> None:
    """Write the textfile and push to the Pushgateway, as asked; a failure is a warning."""
    from .observe import metrics_export as export

    if settings.metrics_file is not None:
        try:
            export.write_textfile(metrics, settings.metrics_file)
        except OSError as exc:
            log.warning("cannot write the metrics file %s: %s (--metrics-file)",
                        settings.metrics_file, exc.strerror or exc)  # fmt: skip
    if settings.pushgateway is not None:
        with anyio.CancelScope(shield=shield):
            await _push(settings, metrics)


async def _push(settings: Settings, metrics: PipelineMetrics) -> None:
    """Push to the Pushgateway within one deadline for the whole exchange; a failure warns."""
    import httpx

    from .observe import metrics_export as export

    assert settings.pushgateway is not None
    instance = settings.metrics_instance or socket.gethostname()
    deadline = min(settings.timeout, PUSH_TIMEOUT_S)
    # httpx's timeout is per read: a gateway that sends a byte at a time would never hit it.
    try:
        with anyio.fail_after(deadline):
            async with httpx.AsyncClient(follow_redirects=False, timeout=deadline) as client:
                await export.push(metrics, settings.pushgateway.get_secret_value(),
                                  instance=instance, client=client)  # fmt: skip
    except TimeoutError:
        problem = (
            f"no complete answer within {deadline:g} s (--timeout, {PUSH_TIMEOUT_S:g} at most)"
        )
    except (OSError, ValueError, httpx.HTTPError) as exc:
        problem = str(exc) or type(exc).__name__
    else:
        log.info("metrics pushed to %s (job customer_pipeline, instance %s)",
                 settings.pushgateway.masked, instance)  # fmt: skip
        return
    log.warning(
        "cannot push the metrics to the Pushgateway at %s: %s; the run's outputs are not "
        "affected (--pushgateway)", settings.pushgateway.masked, problem,
    )  # fmt: skip
