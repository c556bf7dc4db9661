"""Secrets cut short by a message's excerpt, and a gateway's echo of basic auth, stay masked."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest
import respx
from click.testing import CliRunner

from customer_pipeline import PipelineError, Settings, run_pipeline
from customer_pipeline.cli import main
from customer_pipeline.logs import redact

from .conftest import BASE_URL, fast_settings

KEY = "sk-live-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH"


def test_a_secret_cut_off_at_the_end_of_an_excerpt_is_masked() -> None:
    excerpt = repr(f"k={KEY}".encode()[:40])
    assert redact(f"not JSON ({excerpt})", [KEY]) == "not JSON (b'k=***')"
    # A short word that happens to start the secret is not a leak.
    assert redact("sk-live runs", [KEY]) == "sk-live runs"


async def test_a_non_json_body_echoing_the_key_leaks_no_part_of_it(tmp_path: Path) -> None:
    settings = fast_settings(output_dir=tmp_path, api_key=KEY, max_retries=0)
    with respx.mock(assert_all_called=False) as router:
        router.get(url__startswith=BASE_URL).mock(httpx.Response(200, content=f"k={KEY}".encode()))
        with pytest.raises(PipelineError) as raised:
            await run_pipeline(settings)
    texts = [p.read_text() for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".sqlite3"]
    assert raised.value is not None
    assert any("not JSON" in text for text in texts)
    for text in texts:
        assert KEY[8:16] not in text


def test_basic_auth_echoed_by_a_gateway_is_masked() -> None:
    settings = Settings(pushgateway="http://pusher:p%40ss-w0rd@127.0.0.1:9091")
    token = base64.b64encode(b"pusher:p@ss-w0rd").decode()
    assert token in settings.secrets
    assert redact(f"the gateway answered 500 Basic {token}", settings.secrets) == (
        "the gateway answered 500 Basic ***"
    )


def test_the_cli_masks_the_cut_key_on_the_terminal(tmp_path: Path) -> None:
    with respx.mock(assert_all_called=False) as router:
        router.get(url__startswith=BASE_URL).mock(httpx.Response(200, content=f"k={KEY}".encode()))
        result = CliRunner().invoke(main, [
            "run", "--base-url", BASE_URL, "--api-key", KEY, "--output-dir", str(tmp_path),
            "--max-retries", "0", "--transport", "httpx", "--no-progress",
        ])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "not JSON" in result.output and KEY[8:16] not in result.output
