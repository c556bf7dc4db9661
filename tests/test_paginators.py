"""Paginators, one by one: the requests they build, what they read back, where a walk goes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from customer_pipeline import InvalidBodyError
from customer_pipeline.sources import FieldMap, Page, Unit, make_paginator
from customer_pipeline.sources.link import parse_link_header
from customer_pipeline.sources.paginators import ForeignNextError

from .conftest import fast_settings

BASE = "http://api.test"


def paginator(**settings: Any) -> Any:
    return make_paginator(fast_settings(**settings))


def read(p: Any, body: Any, unit: Unit | None = None, headers: dict[str, str] | None = None,
         url: str = f"{BASE}/api/users?page=1") -> Page:  # fmt: skip
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return p.read(unit or Unit(p.first), url, headers or {}, raw)  # type: ignore[no-any-return]


# -- requests: only the configured parameters, nothing else -------------------------------


@pytest.mark.parametrize(
    ("settings", "unit", "url"),
    [
        ({}, Unit(3), f"{BASE}/api/users?page=3&per_page=6"),
        ({"page_param": "_page", "size_param": "_per_page", "resource": "/users"}, Unit(2),
         f"{BASE}/users?_page=2&_per_page=6"),
        ({"first_page": 0}, Unit(0), f"{BASE}/api/users?page=0&per_page=6"),
        ({"paginator": "offset", "size_param": "limit", "per_page": 10}, Unit(4),
         f"{BASE}/api/users?offset=30&limit=10"),
        ({"paginator": "offset", "offset_param": "skip", "size_param": "take"}, Unit(1),
         f"{BASE}/api/users?skip=0&take=6"),
        ({"paginator": "cursor", "next_path": "next"}, Unit(1), f"{BASE}/api/users?per_page=6"),
        ({"paginator": "cursor", "next_path": "next", "cursor_param": "after"},
         Unit(2, "a+b/c=="), f"{BASE}/api/users?after=a%2Bb%2Fc%3D%3D&per_page=6"),
        ({"paginator": "next_url", "next_path": "links.next"}, Unit(1),
         f"{BASE}/api/users?per_page=6"),
        ({"paginator": "next_url", "next_path": "links.next"}, Unit(5, f"{BASE}/p?token=5"),
         f"{BASE}/p?token=5"),
        ({"paginator": "link", "page_param": "_page", "size_param": "_limit"}, Unit(7),
         f"{BASE}/api/users?_page=7&_limit=6"),
        ({"page_param": "page[n]", "size_param": "größe"}, Unit(1),
         f"{BASE}/api/users?page%5Bn%5D=1&gr%C3%B6%C3%9Fe=6"),
    ],
)  # fmt: skip
def test_each_request_sends_only_its_own_parameters(
    settings: dict[str, Any], unit: Unit, url: str
) -> None:
    assert paginator(**settings).request(unit).url == url


@pytest.mark.parametrize(
    ("settings", "unit", "what"),
    [
        ({}, Unit(3), "page 3"),
        ({"paginator": "offset", "per_page": 10}, Unit(4), "page 4 (offset 30)"),
        ({"paginator": "link"}, Unit(2, f"{BASE}/x?page=2"), "page 2"),
        ({"paginator": "cursor", "next_path": "n"}, Unit(1), "page 1"),
        ({"paginator": "cursor", "next_path": "n"}, Unit(2, "c" * 50),
         f"page 2 (cursor {'c' * 40}...(10 more characters))"),
        ({"paginator": "next_url", "next_path": "n"}, Unit(6, f"{BASE}/p?t=6"), "page 6"),
    ],
)  # fmt: skip
def test_each_request_says_which_unit_it_fetches(
    settings: dict[str, Any], unit: Unit, what: str
) -> None:
    assert paginator(**settings).request(unit).what == what


def test_a_link_unit_reached_by_its_next_url_is_fetched_at_that_url() -> None:
    p = paginator(paginator="link")
    assert p.request(Unit(4, f"{BASE}/api/users?page=4&x=1")).url == f"{BASE}/api/users?page=4&x=1"


@pytest.mark.parametrize(
    ("name", "chain_only", "random_access"),
    [("page_number", False, True), ("offset", False, True), ("cursor", True, False),
     ("next_url", True, False)],
)  # fmt: skip
def test_which_paginators_fan_out_and_which_follow_a_chain(
    name: str, chain_only: bool, random_access: bool
) -> None:
    p = paginator(paginator=name, next_path="next")
    page = read(p, {"data": [{"id": 1}], "total_pages": 9, "next": None})
    assert (p.chain_only, p.random_access(page)) == (chain_only, random_access)
    assert page.total_pages == 9 and page.headers is None  # no header is kept for them


# -- bodies --------------------------------------------------------------------------------


def test_page_number_reads_records_and_the_page_count_or_the_record_count() -> None:
    p = paginator()
    assert read(p, {"data": [{"id": 1}], "total_pages": 4}).total_pages == 4
    assert read(p, {"data": [], "total": 13, "per_page": 5}).total_pages == 3  # its own size
    assert read(p, {"data": [], "total": 13}).total_pages == 3  # ours: per_page 6
    assert read(p, {"data": []}).total_pages is None


def test_offset_reads_the_page_count_from_the_record_count_and_its_own_size() -> None:
    p = paginator(paginator="offset", size_param="limit", per_page=10)
    page = read(p, {"data": [{"id": 1}], "total": 25}, unit=Unit(2))
    assert (page.number, page.records, page.total_pages) == (2, [{"id": 1}], 3)
    assert read(p, {"data": [], "total": 25, "limit": 5}).total_pages == 5
    assert read(p, {"data": [], "total": -1}).total_pages is None


def test_a_page_keeps_its_body_and_the_state_of_the_unit_it_answers() -> None:
    p = paginator(paginator="cursor", next_path="next")
    body = orjson.dumps({"data": [{"id": 4}], "next": "c3"})
    page = read(p, body, unit=Unit(2, "c2"))
    assert (page.number, page.state, page.body, page.next) == (2, "c2", body, "c3")


def test_dotted_paths_find_records_and_counts_anywhere_and_an_empty_path_is_the_body() -> None:
    nested = paginator(data_path="result.items", total_pages_path="meta.paging.pages")
    page = read(nested, {"result": {"items": [{"id": 9}]}, "meta": {"paging": {"pages": "2"}}})
    assert (page.records, page.total_pages) == ([{"id": 9}], 2)
    bare = paginator(data_path="")
    assert read(bare, [{"id": 1}, {"id": 2}]).records == [{"id": 1}, {"id": 2}]


@pytest.mark.parametrize(
    ("settings", "body", "said"),
    [
        ({}, [1, 2], "a JSON array, not a listing object"),
        ({}, {"items": []}, "a JSON object with no 'data' list"),
        ({"data_path": "a.b"}, {"a": {"b": {"c": 1}}}, "a JSON object with a 'a.b' that is not"),
        ({"data_path": ""}, {"data": []}, "a JSON object, not a list of records"),
        ({"data_path": ""}, "text", "a JSON string, not a list of records"),
        ({}, b'{"data": [1, 2', "JSON cut short"),
    ],
)
def test_a_body_that_is_not_the_configured_listing_says_what_it_is(
    settings: dict[str, Any], body: Any, said: str
) -> None:
    with pytest.raises(InvalidBodyError, match=said):
        read(paginator(**settings), body)


# -- chains: cursors and next URLs ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "following"),
    [("abc", "abc"), (17, "17"), (None, None), ("", None), ("MISSING", None)],
)
def test_a_cursor_comes_from_next_path_and_missing_null_or_empty_ends_the_chain(
    value: Any, following: str | None
) -> None:
    p = paginator(paginator="cursor", next_path="meta.next")
    meta = {} if value == "MISSING" else {"next": value}
    page = read(p, {"data": [{"id": 1}], "meta": meta})
    unit = p.follows(page)
    assert (unit.state if unit else None) == following
    if unit is not None:
        assert unit.number == 2


@pytest.mark.parametrize("value", [True, [1], {"a": 1}, 1.5])
def test_a_cursor_of_another_type_is_a_bad_body(value: Any) -> None:
    p = paginator(paginator="cursor", next_path="next")
    with pytest.raises(InvalidBodyError, match="'next' is not a cursor"):
        read(p, {"data": [], "next": value})


@pytest.mark.parametrize(
    ("value", "resolved"),
    [
        (f"{BASE}/api/users?page=2", f"{BASE}/api/users?page=2"),
        ("/api/users?page=2", f"{BASE}/api/users?page=2"),
        ("?page=2&per_page=6", f"{BASE}/api/users?page=2&per_page=6"),
        ("users2", f"{BASE}/api/users2"),
    ],
)
def test_a_next_url_may_be_relative_to_the_request_it_came_in(value: str, resolved: str) -> None:
    p = paginator(paginator="next_url", next_path="links.next")
    page = read(p, {"data": [{"id": 1}], "links": {"next": value}})
    assert p.follows(page) == Unit(2, resolved)


@pytest.mark.parametrize("next_value", [None, "", "MISSING"])
def test_a_next_url_that_is_missing_null_or_empty_ends_the_chain(next_value: Any) -> None:
    p = paginator(paginator="next_url", next_path="links.next")
    links = {} if next_value == "MISSING" else {"next": next_value}
    assert p.follows(read(p, {"data": [{"id": 1}], "links": links})) is None


@pytest.mark.parametrize("value", [5, True, ["/x"], {"href": "/x"}])
def test_a_next_url_of_another_type_is_a_bad_body(value: Any) -> None:
    p = paginator(paginator="next_url", next_path="next")
    with pytest.raises(InvalidBodyError, match="'next' is not a URL"):
        read(p, {"data": [], "next": value})


@pytest.mark.parametrize(
    "elsewhere",
    ["http://evil.test/api/users?page=2", "https://api.test/api/users?page=2",
     "http://api.test:8443/x", "//evil.test/x"],
)  # fmt: skip
def test_a_next_url_on_another_origin_is_refused(elsewhere: str) -> None:
    p = paginator(paginator="next_url", next_path="next")
    page = read(p, {"data": [{"id": 1}], "next": elsewhere})
    with pytest.raises(ForeignNextError, match=r"not on http://api\.test"):
        p.follows(page)


# -- Link headers ---------------------------------------------------------------------------


def test_a_link_header_with_last_gives_the_count_and_random_access() -> None:
    p = paginator(paginator="link", data_path="", page_param="_page", size_param="_limit")
    link = (f'<{BASE}/users?_page=2&_limit=10>; rel="next", '
            f'<{BASE}/users?_page=5&_limit=10>; rel="last"')  # fmt: skip
    page = read(p, [{"id": 1}], headers={"link": link})
    assert page.total_pages == 5 and p.random_access(page)
    assert page.next == f"{BASE}/users?_page=2&_limit=10"
    assert page.headers == {"link": link}  # kept, for the checkpoint


def test_a_link_walk_counted_from_zero_takes_its_count_from_last() -> None:
    p = paginator(paginator="link", data_path="", first_page=0)
    page = read(p, [{"id": 1}], unit=Unit(0),
                headers={"link": f'<{BASE}/users?page=4>; rel="last"', "etag": "x"})  # fmt: skip
    assert page.total_pages == 5 and page.headers == {"link": f'<{BASE}/users?page=4>; rel="last"'}


def test_a_link_page_reached_through_a_chain_never_turns_into_a_fan_out() -> None:
    p = paginator(paginator="link", data_path="")
    link = f'<{BASE}/users?page=3>; rel="next", <{BASE}/users?page=5>; rel="last"'
    page = read(p, [{"id": 1}], unit=Unit(2, f"{BASE}/users?page=2"), headers={"link": link})
    assert page.total_pages == 5 and not p.random_access(page)
    assert p.follows(page) == Unit(3, f"{BASE}/users?page=3")


@pytest.mark.parametrize(
    "last", [None, f"{BASE}/users?cursor=zz", f"{BASE}/users?page=x", f"{BASE}/users?page=1&page=2"]
)
def test_a_link_header_without_a_usable_last_is_a_chain(last: str | None) -> None:
    p = paginator(paginator="link", data_path="")
    link = f'<{BASE}/users?page=2>; rel="next"' + (f', <{last}>; rel="last"' if last else "")
    page = read(p, [{"id": 1}], headers={"link": link})
    assert page.total_pages is None and not p.random_access(page)
    assert p.follows(page) == Unit(2, f"{BASE}/users?page=2")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", {}),
        ('<https://a.test/2>; rel="next"', {"next": "https://a.test/2"}),
        ('<https://a.test/2>; rel=next', {"next": "https://a.test/2"}),
        ('<https://a.test/2>;REL="NEXT"', {"next": "https://a.test/2"}),
        ('<https://a.test/1>; rel="prev first", <https://a.test/9>; rel="last"',
         {"prev": "https://a.test/1", "first": "https://a.test/1", "last": "https://a.test/9"}),
        ('<https://a.test/2>; title="a, b; c"; rel="next", <https://a.test/3>; rel="last"',
         {"next": "https://a.test/2", "last": "https://a.test/3"}),
        ('<https://a.test/2>; title="say \\"next\\", <x>"; rel="next"',
         {"next": "https://a.test/2"}),
        ('<https://a.test/a,b>; rel="next"', {"next": "https://a.test/a,b"}),
        ('</users?page=2>; rel="next"', {"next": "http://api.test/users?page=2"}),
        ('<?page=3>; rel="next"', {"next": "http://api.test/api/users?page=3"}),
        ('<https://a.test/2>; rel="next", <https://a.test/3>; rel="next"',
         {"next": "https://a.test/2"}),
        ('<https://a.test/2>; rel="next"; rel="last"', {"next": "https://a.test/2"}),
        ('garbage, <https://a.test/2>; rel="next"', {"next": "https://a.test/2"}),
        ('<https://a.test/2>; rel="next" junk, <https://a.test/3>; rel="last"',
         {"last": "https://a.test/3"}),
        ("<https://a.test/2", {}),
        ('<https://a.test/2>; rel="next', {"next": "https://a.test/2"}),
        ("<https://a.test/2>; rel*=UTF-8''next", {}),
        ('<https://a.test/2>', {}),
        (' , ,<https://a.test/2>;rel="next" , ', {"next": "https://a.test/2"}),
    ],
)  # fmt: skip
def test_link_header_parsing(header: str, expected: dict[str, str]) -> None:
    assert parse_link_header(header, f"{BASE}/api/users?page=1") == expected


# -- fields ---------------------------------------------------------------------------------


def test_the_field_map_moves_nested_fields_and_keeps_the_others_by_name() -> None:
    shape = FieldMap({"id": "uid", "email": "contact.email", "first_name": "name.first"})
    record = {"uid": "7", "contact": {"email": "a@b.io"}, "name": {"first": "Ann"},
              "last_name": "Lee", "avatar": None, "extra": 1}  # fmt: skip
    assert shape(record) == {"id": "7", "email": "a@b.io", "first_name": "Ann",
                             "last_name": "Lee", "avatar": None}  # fmt: skip
    assert shape({"uid": 1, "contact": "not an object"}) == {"id": 1}
    assert shape(["not", "a", "record"]) == ["not", "a", "record"]
