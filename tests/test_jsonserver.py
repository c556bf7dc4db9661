"""json-server fixtures: the plumbing, and the paging facts issue 9's paginators rely on."""

from __future__ import annotations

import json
import os
import re
import select
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .jsonserver import (
    PINNED,
    JsonServerError,
    find_json_server,
    make_users,
    node_command,
    serve,
)

REPO = Path(__file__).resolve().parent.parent

# Stands in for json-server where the plumbing, not node, is under test. Modes: "serve"
# answers HTTP with a grandchild alive, "silent" never answers, "exit" dies at once,
# "busy-once" fails its first start as if the port were taken.
FAKE_SERVER = """\
import http.server, os, pathlib, signal, subprocess, sys
mode, port = sys.argv[1], int(sys.argv[sys.argv.index("--port") + 1])
starts = pathlib.Path("starts")
starts.write_text(starts.read_text() + "x" if starts.exists() else "x")
if mode == "exit" or (mode == "busy-once" and starts.read_text() == "x"):
    print("Error: listen EADDRINUSE" if mode == "busy-once" else "broken db.json", flush=True)
    sys.exit(1)
child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
pathlib.Path("pids").write_text(f"{os.getpid()} {child.pid}")
if mode == "silent":
    signal.pause()
handler = http.server.SimpleHTTPRequestHandler
http.server.HTTPServer(("127.0.0.1", port), handler).serve_forever()
"""


@pytest.fixture
def fake_server(tmp_path: Path) -> Callable[[str], list[str]]:
    """The command that runs FAKE_SERVER in a mode."""
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    return lambda mode: [sys.executable, str(script), mode]


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """Plain httpx that ignores proxy settings: every server here is on loopback."""
    with httpx.Client(trust_env=False, timeout=10) as c:
        yield c


def pids(workdir: Path) -> list[int]:
    """The fake server's pid and its grandchild's."""
    return [int(pid) for pid in (workdir / "pids").read_text().split()]


def gone(pid: int, timeout: float = 5.0) -> bool:
    """True once process ``pid`` has ended: no such process, or its pidfd turns readable."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* has them) of sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def ids(records: list[dict[str, Any]]) -> list[Any]:
    """The ids of records, in order."""
    return [record["id"] for record in records]


# --- plumbing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("required", "outcome"), [("", pytest.skip.Exception), ("1", pytest.fail.Exception)]
)
def test_missing_json_server_skips_or_fails_where_services_are_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, required: str, outcome: type[Exception]
) -> None:
    monkeypatch.setenv("PIPELINE_TESTS_JSON_SERVER_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("PIPELINE_TESTS_REQUIRE_SERVICES", required)
    for line in PINNED:
        with pytest.raises(outcome) as stopped:
            find_json_server(line)
        hint = "run scripts/install-json-server"
        assert str(stopped.value) == f"json-server {line} not installed: {hint}"


def test_another_release_than_the_pin_is_not_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    package = tmp_path / "json-server-0.17" / "node_modules"
    (package / "json-server").mkdir(parents=True)
    (package / "json-server" / "package.json").write_text('{"version": "0.17.3"}')
    (package / ".bin").mkdir()
    (package / ".bin" / "json-server").write_text("")
    monkeypatch.setenv("PIPELINE_TESTS_JSON_SERVER_DIR", str(tmp_path))
    monkeypatch.setenv("PIPELINE_TESTS_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match=r"is 0\.17\.3, not the pinned 0\.17\.4: run"):
        find_json_server("0.17")


def test_the_install_script_pins_the_releases_the_tests_expect() -> None:
    script = (REPO / "scripts" / "install-json-server").read_text()
    pins = re.search(r"^LINES=\((.*)\)$", script, re.MULTILINE)
    assert pins is not None
    assert dict(entry.split() for entry in re.findall(r'"([^"]+)"', pins.group(1))) == PINNED
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/install-json-server" in ci
    assert "export PIPELINE_TESTS_REQUIRE_SERVICES=1" in ci


def test_serve_yields_a_url_and_stops_the_whole_process_group(
    fake_server: Callable[[str], list[str]], tmp_path: Path, client: httpx.Client
) -> None:
    workdir = tmp_path / "srv"
    with serve(fake_server("serve"), {"users": []}, workdir) as url:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert client.get(url + "/db.json").json() == {"users": []}
        server, grandchild = pids(workdir)
        assert not gone(server, timeout=0)
        assert not gone(grandchild, timeout=0)
    assert gone(server, timeout=0)
    assert gone(grandchild)
    with pytest.raises(httpx.ConnectError):
        client.get(url + "/")


def test_a_server_that_never_answers_fails_at_the_deadline_and_is_stopped(
    fake_server: Callable[[str], list[str]], tmp_path: Path
) -> None:
    workdir = tmp_path / "srv"
    silent = r"did not answer on http://127\.0\.0\.1:\d+ within 1 s"
    with (
        pytest.raises(JsonServerError, match=silent),
        serve(fake_server("silent"), {}, workdir, deadline=1.0),
    ):
        pass
    assert all(gone(pid) for pid in pids(workdir))


def test_a_server_that_dies_at_start_fails_with_its_output(
    fake_server: Callable[[str], list[str]], tmp_path: Path
) -> None:
    with (
        pytest.raises(JsonServerError, match=r"exited with 1; its output:\nbroken db\.json"),
        serve(fake_server("exit"), {}, tmp_path / "srv"),
    ):
        pass


def test_a_port_taken_before_the_bind_is_retried_on_another(
    fake_server: Callable[[str], list[str]], tmp_path: Path, client: httpx.Client
) -> None:
    workdir = tmp_path / "srv"
    with serve(fake_server("busy-once"), {"users": []}, workdir) as url:
        assert client.get(url + "/db.json").status_code == 200
    assert (workdir / "starts").read_text() == "xx"
    assert "EADDRINUSE" in (workdir / "server-1.log").read_text()


# --- json-server 0.17 ---------------------------------------------------------------------


def test_017_pages_a_bare_array_with_link_and_total_count(
    json_server_017: str, client: httpx.Client
) -> None:
    first = client.get(f"{json_server_017}/users", params={"_page": 1, "_limit": 10})
    assert first.json() == make_users(50)[:10]
    assert first.headers["x-total-count"] == "50"
    assert {rel: link["url"] for rel, link in first.links.items()} == {
        "first": f"{json_server_017}/users?_page=1&_limit=10",
        "next": f"{json_server_017}/users?_page=2&_limit=10",
        "last": f"{json_server_017}/users?_page=5&_limit=10",
    }
    second = client.get(first.links["next"]["url"])
    assert ids(second.json()) == list(range(11, 21))
    assert second.links["prev"]["url"] == f"{json_server_017}/users?_page=1&_limit=10"
    assert second.links["next"]["url"] == f"{json_server_017}/users?_page=3&_limit=10"


def test_017_ends_with_no_next_link_then_an_empty_array(
    json_server_017: str, client: httpx.Client
) -> None:
    last = client.get(f"{json_server_017}/users", params={"_page": 5, "_limit": 10})
    assert ids(last.json()) == list(range(41, 51))
    assert set(last.links) == {"first", "prev", "last"}
    past = client.get(f"{json_server_017}/users", params={"_page": 6, "_limit": 10})
    assert past.json() == []
    assert past.headers["link"] == ""
    assert past.headers["x-total-count"] == "50"


def test_017_following_next_links_yields_every_record_once(
    json_server_017: str, client: httpx.Client
) -> None:
    seen: list[Any] = []
    url: str | None = f"{json_server_017}/users?_page=1&_limit=7"
    while url is not None:
        response = client.get(url)
        seen += ids(response.json())
        url = response.links.get("next", {}).get("url")
    assert seen == list(range(1, 51))


def test_017_knows_no_per_page_and_ignores_parameters_no_record_has(
    json_server_017: str, client: httpx.Client
) -> None:
    page = client.get(f"{json_server_017}/users", params={"_page": 1, "_per_page": 5})
    assert ids(page.json()) == list(range(1, 11))
    assert page.links["next"]["url"].endswith("/users?_page=2&_per_page=5")
    unpaged = client.get(f"{json_server_017}/users", params={"page": 2, "per_page": 6})
    assert len(unpaged.json()) == 50
    assert "link" not in unpaged.headers


# --- json-server 1.0 ----------------------------------------------------------------------


def test_10_pages_an_envelope_with_string_ids(json_server_10: str, client: httpx.Client) -> None:
    first = client.get(f"{json_server_10}/users", params={"_page": 1, "_per_page": 10})
    body = first.json()
    assert {k: v for k, v in body.items() if k != "data"} == {
        "first": 1, "prev": None, "next": 2, "last": 5, "pages": 5, "items": 50,
    }
    assert body["data"] == [{**user, "id": str(user["id"])} for user in make_users(50)[:10]]
    assert "link" not in first.headers
    assert "x-total-count" not in first.headers
    second = client.get(f"{json_server_10}/users", params={"_page": 2}).json()
    assert (second["prev"], second["next"]) == (1, 3)
    assert ids(second["data"]) == [str(i) for i in range(11, 21)]


def test_10_clamps_a_page_past_the_end_to_the_last(
    json_server_10: str, client: httpx.Client
) -> None:
    last = client.get(f"{json_server_10}/users", params={"_page": 5, "_per_page": 10}).json()
    assert (last["prev"], last["next"]) == (4, None)
    assert ids(last["data"]) == [str(i) for i in range(41, 51)]
    past = client.get(f"{json_server_10}/users", params={"_page": 6, "_per_page": 10}).json()
    assert past == last


def test_10_walking_pages_to_the_count_yields_every_record_once(
    json_server_10: str, client: httpx.Client
) -> None:
    def page(number: int) -> dict[str, Any]:
        response = client.get(f"{json_server_10}/users", params={"_page": number, "_per_page": 7})
        result: dict[str, Any] = response.json()
        return result

    first = page(1)
    seen = ids(first["data"])
    for number in range(2, first["pages"] + 1):
        seen += ids(page(number)["data"])
    assert first["pages"] == 8
    assert seen == [str(i) for i in range(1, 51)]


def test_10_treats_any_other_parameter_as_a_filter(
    json_server_10: str, client: httpx.Client
) -> None:
    for extra in ({"per_page": 10}, {"_limit": 5}):
        body = client.get(
            f"{json_server_10}/users", params={"_page": 1, "_per_page": 10, **extra}
        ).json()
        assert (body["items"], body["data"]) == (0, []), extra
    filtered = client.get(f"{json_server_10}/users", params={"_page": 1, "first_name": "First3"})
    assert ids(filtered.json()["data"]) == ["3"]


def test_10_listens_on_loopback_only(json_server_10: str) -> None:
    port = int(json_server_10.rsplit(":", 1)[1])
    assert listening_addresses(port) == {"0100007F"}


def test_json_server_stops_when_its_context_ends(tmp_path: Path, client: httpx.Client) -> None:
    workdir = tmp_path / "srv"
    workdir.mkdir()
    command = node_command(find_json_server("1.0"), workdir)
    with serve(command, {"users": make_users(3)}, workdir) as url:
        assert ids(client.get(f"{url}/users").json()) == ["1", "2", "3"]
    with pytest.raises(httpx.ConnectError):
        client.get(f"{url}/users")


def test_a_test_can_serve_its_own_db(
    json_server: Callable[[str, dict[str, Any]], str], client: httpx.Client
) -> None:
    db = {"people": [{"id": "a"}, {"id": "b"}]}
    old, new = json_server("0.17", db), json_server("1.0", db)
    assert client.get(f"{old}/people").json() == db["people"]
    assert client.get(f"{new}/people", params={"_page": 1}).json()["items"] == 2
    assert json.loads(next(Path.cwd().glob("json-server-1.0-*/db.json")).read_text()) == db
