"""Reading a 200's body: inflated as it streams, refused as soon as it passes the limit.

A declared Content-Length over the limit is refused before a byte is read; a compressed body
is inflated piece by piece, never more than the limit out of one piece, so a compression bomb
costs at most the limit in memory.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, NoReturn

import httpx

from ..errors import ApiError, InvalidBodyError, ResponseTooLargeError
from .failures import NOT_A_LISTING
from .transport import BodyDecoder

if TYPE_CHECKING:
    from .fetcher import Request


async def read_body(request: Request, response: httpx.Response, limit: int) -> tuple[bytes, int]:
    """The body, inflated as it streams and refused as soon as it passes the limit."""
    declared = response.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        _too_large(request, limit, int(declared))
    if response.is_stream_consumed:  # read before us (respx's httpx mocker): decoded
        body = response.content
        if len(body) > limit:
            _too_large(request, limit, len(body))
        return body, len(body)
    try:
        decoder = BodyDecoder.for_header(response.headers.get("content-encoding"))
    except ValueError as exc:
        raise ApiError(f"{request.what}: {exc} ({request.url})", url=request.url,
                       status=200) from None  # fmt: skip
    chunks: list[bytes] = []
    size = wire = 0
    try:
        async for chunk in response.aiter_raw():
            wire += len(chunk)
            if decoder is not None:
                # Never more than the limit out of one piece: a bomb's 64 KB is 64 MB.
                chunk = decoder.decode(chunk, limit + 1 - size)
            size += len(chunk)
            if size > limit or wire > limit:
                # The error's traceback keeps this frame, so these bytes, alive a while.
                chunks.clear()
                chunk = b""
                _too_large(request, limit, size, decoder, wire)
            chunks.append(chunk)
        if decoder is not None and not decoder.complete:
            raise zlib.error("the stream ends before its end marker")
    except zlib.error as exc:
        raise InvalidBodyError(
            f"{NOT_A_LISTING}{request.url} is a corrupt "
            f"{decoder.encoding if decoder else ''} stream ({exc})",
            url=request.url,
            status=200,
        ) from None
    return b"".join(chunks), wire


def _too_large(
    request: Request, limit: int, size: int, decoder: BodyDecoder | None = None, wire: int = 0
) -> NoReturn:
    """Raise the error for a body past ``limit`` (``max_response_bytes``)."""
    setting = f"max_response_bytes={limit}"
    if decoder is None:
        what = f"response of {size} bytes or more exceeds {setting}"
    else:
        what = (
            f"{decoder.encoding} response inflates to more than {setting} from {wire} bytes "
            "on the wire (a compression bomb?)"
        )
    raise ResponseTooLargeError(
        f"{request.what}: {what} ({request.url})", url=request.url, status=200
    )
