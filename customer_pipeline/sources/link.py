"""RFC 8288 ``Link`` headers: ``<url>; rel="next", <url>; rel="last"``, parsed properly.

Several link values in one header (or in several headers, joined by commas), parameters in
any order and case, quoted strings with commas, semicolons and escapes in them, ``rel``
lists of several space-separated types, and relative references resolved against the URL
of the request they answer. A malformed value is skipped, not fatal: the next one is read.
"""

from __future__ import annotations

from urllib.parse import urljoin

_SPACE = " \t"


def parse_link_header(value: str, base_url: str) -> dict[str, str]:
    """Each relation type (lower-cased) to the absolute URL of its first link."""
    links: dict[str, str] = {}
    i, n = 0, len(value)
    while i < n:
        target, params, i = _link_value(value, i)
        if target is None:
            continue
        for rel in params.get("rel", "").lower().split():
            links.setdefault(rel, urljoin(base_url, target))
    return links


def _link_value(text: str, i: int) -> tuple[str | None, dict[str, str], int]:
    """One ``<target>; params`` from ``i``: the target (None if malformed), params, next i."""
    i = _skip(text, i, _SPACE + ",")
    if i >= len(text):
        return None, {}, i
    if text[i] != "<":
        return None, {}, _past_value(text, i)
    end = text.find(">", i + 1)
    if end < 0:
        return None, {}, len(text)
    target = text[i + 1 : end].strip()
    params: dict[str, str] = {}
    i = _skip(text, end + 1, _SPACE)
    while i < len(text) and text[i] == ";":
        i = _skip(text, i + 1, _SPACE)
        start = i
        while i < len(text) and text[i] not in "=;," + _SPACE:
            i += 1
        name = text[start:i].lower()
        i = _skip(text, i, _SPACE)
        value = ""
        if i < len(text) and text[i] == "=":
            i = _skip(text, i + 1, _SPACE)
            if i < len(text) and text[i] == '"':
                value, i = _quoted(text, i)
            else:
                start = i
                while i < len(text) and text[i] not in ";," + _SPACE:
                    i += 1
                value = text[start:i]
            i = _skip(text, i, _SPACE)
        # The first occurrence of a parameter counts (RFC 8288 section 3); rel* (RFC 8187
        # encoding) is not needed for relation types, which are plain tokens.
        if name and not name.endswith("*"):
            params.setdefault(name, value)
    if i < len(text) and text[i] != ",":
        return None, {}, _past_value(text, i)  # garbage after the parameters
    return target, params, i


def _quoted(text: str, i: int) -> tuple[str, int]:
    """The quoted string at ``i`` (which is a quote), unescaped, and the index after it."""
    out: list[str] = []
    i += 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if char == '"':
            return "".join(out), i + 1
        out.append(char)
        i += 1
    return "".join(out), i  # unterminated: what there is


def _past_value(text: str, i: int) -> int:
    """The index of the comma that ends the link value around ``i`` (outside quotes and <>)."""
    quoted = bracketed = False
    while i < len(text):
        char = text[i]
        if quoted:
            if char == "\\":
                i += 1
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "<":
            bracketed = True
        elif char == ">":
            bracketed = False
        elif char == "," and not bracketed:
            return i
        i += 1
    return i


def _skip(text: str, i: int, chars: str) -> int:
    while i < len(text) and text[i] in chars:
        i += 1
    return i
