"""A bound on the size of a request's head (request line and headers), enforced while it arrives.

BentoML runs each worker's uvicorn server with uvicorn's default HTTP protocol, httptools,
which has no limit on the size of a request head: a 100 MB header is read and joined in
full before the app sees the request (it stalled a worker for 11 s). No BentoML setting
reaches uvicorn's protocol options (its ``http`` configuration section has host, port, CORS
and response options only), so :func:`install`, called when the service module is
imported in a worker (before the worker builds its uvicorn configuration), makes
:class:`BoundedHeadersProtocol` uvicorn's ``auto`` protocol: httptools' protocol, which
answers 431 and closes the connection as soon as a head passes :data:`MAX_HEADER_BYTES`.
Without httptools uvicorn uses h11, which has a limit of its own (16 KiB), and nothing
is changed.
"""

from __future__ import annotations

import json
import logging

MAX_HEADER_BYTES = 64 * 1024  # request line and headers; browsers and proxies stay far below
LINGER_SECONDS = 2.0  # after a 431, what the client still sends is read and dropped this long, then it is closed
_END_OF_HEAD = b"\r\n\r\n"
logger = logging.getLogger("persuade.serving")

try:
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
except ImportError:  # no httptools: uvicorn's h11 protocol bounds heads itself
    HttpToolsProtocol = None


def install() -> bool:
    """Make :class:`BoundedHeadersProtocol` uvicorn's ``auto`` HTTP protocol (False without httptools)."""
    if HttpToolsProtocol is None:
        return False
    from uvicorn import config

    config.HTTP_PROTOCOLS["auto"] = f"{__name__}:BoundedHeadersProtocol"
    return True


if HttpToolsProtocol is not None:

    class BoundedHeadersProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol, answering 431 to a request head over :data:`MAX_HEADER_BYTES`."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._in_head = True  # reading a request line and headers
            self._head_bytes = 0
            self._refused = False

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._in_head:
                end = data.find(_END_OF_HEAD)
                self._head_bytes += len(data) if end < 0 else end
                if self._head_bytes > MAX_HEADER_BYTES:
                    self._refuse()
                    return
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._in_head, self._head_bytes = False, 0
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head = True

        def _refuse(self) -> None:
            self._refused = True
            body = json.dumps({"error": f"request headers larger than {MAX_HEADER_BYTES:,} bytes",
                               "detail": []}).encode()
            self.transport.write(b"".join([
                STATUS_LINE[431], b"content-type: application/json\r\n",
                b"content-length: ", str(len(body)).encode(), b"\r\n", b"connection: close\r\n\r\n", body]))
            # Close our side only, and discard what the client still sends for a moment: closing with unread
            # bytes would reset the connection, and the client could lose the answer.
            if self.transport.can_write_eof():
                self.transport.write_eof()
                self.loop.call_later(LINGER_SECONDS, self.transport.close)
            else:
                self.transport.close()
            logger.warning("a request head over %d bytes was refused (431)", MAX_HEADER_BYTES)
