"""Where the metrics go: /metrics while a run lasts, a Pushgateway and a textfile when it ends.

Plain values in, OSError out: the run's glue (``monitoring``) turns settings into arguments
and failures into messages. A run that never completed keeps the last success a Pushgateway
or the textfile already holds: its push reads the group's value back and sends it again with
its own figures (a PUT, which replaces the whole group: a POST would leave an older run's
labelled samples next to this run's), its textfile carries the old value over.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import socket
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote, urlsplit, urlunsplit
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from .metrics import LAST_RUN, LAST_SUCCESS, PipelineMetrics

JOB = "customer_pipeline"
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


def live(registry: CollectorRegistry) -> CollectorRegistry:
    """What /metrics shows while a run lasts: ``registry`` without timestamps still unknown.

    A 0 would read as "the last success was in 1970" and fire a no-recent-success alert on
    every healthy run that is scraped live.
    """
    shown = CollectorRegistry(auto_describe=False)
    shown.register(_Known(registry))
    return shown


class _Known(Collector):
    """A registry's metrics, the run's timestamps left out while they are 0 (not yet known)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        for family in self.registry.collect():
            if family.name in (LAST_SUCCESS, LAST_RUN) and not any(
                sample.value for sample in family.samples
            ):
                continue
            yield family


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


async def push(
    metrics: PipelineMetrics, url: str, *, instance: str, client: httpx.AsyncClient
) -> None:
    """Push the run's metrics to the Pushgateway at ``url`` under job and ``instance``.

    Every run replaces its group (PUT), so no labelled sample of an older run outlives it; a
    run that did not complete carries over the last success the group held, read back first.
    ``client`` must not follow redirects. Raises OSError, ValueError or httpx.HTTPError.
    """
    gateway, user, password = split_credentials(url)
    gateway = gateway.rstrip("/")
    auth = httpx.BasicAuth(user, password or "") if user is not None else httpx.USE_CLIENT_DEFAULT
    edits: dict[str, float | None] = {}
    if not metrics.success_seen:
        answer = _checked(await client.get(f"{gateway}/metrics", auth=auth))
        edits[LAST_SUCCESS] = _last_success_of(answer.text, instance)
    group = f"{gateway}/metrics/job/{JOB}/{_grouping('instance', instance)}"
    body = generate_latest(_Edited(metrics.registry, edits))
    headers = {"Content-Type": CONTENT_TYPE_LATEST}
    _checked(await client.put(group, content=body, headers=headers, auth=auth))


def _checked(answer: httpx.Response) -> httpx.Response:
    """``answer`` if it is a 2xx; else OSError naming the status (a redirect is not followed)."""
    if answer.is_success:
        return answer
    status = f"{answer.status_code} {answer.reason_phrase}".strip()
    if answer.is_redirect:
        raise OSError(f"the gateway answered {status}, a redirect, which a push never follows "
                      "(the credentials go only where named): give its final address")  # fmt: skip
    raise OSError(f"the gateway answered {status}")


def _grouping(key: str, value: str) -> str:
    """A grouping key's path part, as the Pushgateway reads it (base64 when it holds a /)."""
    if not value or "/" in value:
        return f"{key}@base64/{base64.urlsafe_b64encode(value.encode()).decode() or '='}"
    return f"{key}/{quote_plus(value)}"


def _last_success_of(text: str, instance: str) -> float | None:
    """The last success the gateway's /metrics holds for our job and ``instance``, if any."""
    for family in text_string_to_metric_families(text):
        if family.name != LAST_SUCCESS:
            continue
        for sample in family.samples:
            labels = sample.labels
            if labels.get("job") == JOB and labels.get("instance") == instance:
                return float(sample.value) if math.isfinite(sample.value) and sample.value else None
    return None


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
