"""Where the metrics go: /metrics while a run lasts, a Pushgateway and a textfile when it ends.

Plain values in, OSError out: the run's glue (``monitoring``) turns settings into arguments
and failures into messages. A run that never completed keeps the last success a Pushgateway
or the textfile already holds: its push leaves that metric out (POST, which replaces only the
metrics it names), its textfile carries the old value over.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    CollectorRegistry,
    generate_latest,
    make_wsgi_app,
    push_to_gateway,
    pushadd_to_gateway,
)
from prometheus_client.exposition import ThreadingWSGIServer, basic_auth_handler, default_handler
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from .metrics import LAST_SUCCESS, PipelineMetrics

JOB = "customer_pipeline"
Handler = Callable[..., Callable[[], None]]
SHUTDOWN_POLL_S = 0.05


@contextlib.contextmanager
def serving(registry: CollectorRegistry, host: str, port: int) -> Iterator[tuple[str, int]]:
    """Serve ``registry`` on http://host:port/metrics until the block ends; yields the address.

    Raises OSError when the port cannot be bound. Port 0 picks a free one.
    """
    server_class = _Server6 if ":" in host else ThreadingWSGIServer
    server = make_server(host, port, make_wsgi_app(registry), server_class, _QuietHandler)
    # prometheus_client's own start_http_server polls for shutdown every 0.5 s, which a
    # short run would wait for at its end.
    thread = threading.Thread(
        target=server.serve_forever, args=(SHUTDOWN_POLL_S,), name="metrics", daemon=True
    )
    thread.start()
    try:
        bound_host, bound_port = server.server_address[:2]
        yield str(bound_host), int(bound_port)
    finally:
        server.shutdown()
        server.server_close()  # the port is free again when the run returns
        thread.join()


class _Server6(ThreadingWSGIServer):
    """The metrics server on an IPv6 address."""

    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """Answers scrapes without a line on stderr for each."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without its ``user:password@`` part, and the user and password (decoded)."""
    if "://" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None, None
    host = parts.netloc.rpartition("@")[2]
    plain = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return plain, unquote(parts.username or ""), unquote(parts.password or "")


def push(metrics: PipelineMetrics, url: str, *, instance: str, timeout: float) -> None:
    """Push the run's metrics to the Pushgateway at ``url`` under job and ``instance``.

    A run that completed replaces the group (PUT); any other leaves out the last success
    and replaces only what it sends (POST), so the success before it stays. Raises OSError.
    """
    gateway, user, password = split_credentials(url)
    handler: Handler = default_handler
    if user is not None:

        def handler(
            url: str,
            method: str,
            timeout: float | None,
            headers: list[tuple[str, str]],
            data: bytes,
        ) -> Callable[[], None]:
            return basic_auth_handler(url, method, timeout, headers, data, user, password)

    key = {"instance": instance}
    if metrics.success_seen:
        push_to_gateway(gateway, JOB, _Edited(metrics.registry), key, timeout, handler)
    else:
        collector = _Edited(metrics.registry, {LAST_SUCCESS: None})
        pushadd_to_gateway(gateway, JOB, collector, key, timeout, handler)


def write_textfile(metrics: PipelineMetrics, path: Path) -> None:
    """Write node_exporter's textfile format to ``path``: a temp file, then a rename.

    A run that did not complete carries over the last success the file held. Raises OSError.
    """
    collector = _Edited(metrics.registry)
    if not metrics.success_seen and (before := _last_success_in(path)) is not None:
        collector = _Edited(metrics.registry, {LAST_SUCCESS: before})
    # In the same folder, for an atomic rename; not *.prom, so node_exporter never reads it.
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        temp.write_bytes(generate_latest(collector))
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def _last_success_in(path: Path) -> float | None:
    """The last success a textfile written before holds, if it can be read."""
    try:
        text = path.read_text(encoding="utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and math.isfinite(sample.value) and sample.value:
                    return float(sample.value)
    except (OSError, ValueError, UnicodeDecodeError):
        pass  # no file, or not ours: nothing to carry over
    return None


class _Edited(Collector):
    """A registry's metrics for a push or a file: some gauges replaced by a value or left out
    (None), and without the ``_created`` samples, which say when this process made them."""

    def __init__(
        self, registry: CollectorRegistry, edits: dict[str, float | None] | None = None
    ) -> None:
        self.registry = registry
        self.edits = edits or {}

    def collect(self) -> Iterable[Metric]:
        for family in self.registry.collect():
            if family.name in self.edits:
                if (value := self.edits[family.name]) is not None:
                    yield GaugeMetricFamily(family.name, family.documentation, value=value)
                continue
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family
