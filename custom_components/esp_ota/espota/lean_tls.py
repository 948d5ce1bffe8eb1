"""An aiohttp connector whose TLS connections read through a 4 KiB buffer, not 256 KiB.

asyncio's TLS layer (`asyncio.sslproto.SSLProtocol`) allocates, and zeroes, a read buffer
of `SSLProtocol.max_size` (256 KiB) for every connection as it is made. For a client of
hundreds of devices, each holding one event stream open for good, that buffer is most of
what a device costs Home Assistant (docs/architecture.md, "What an idle device costs"),
for streams that carry a heartbeat of a few dozen bytes every 15 s. The buffer only
takes what the socket has: a TLS record larger than it (16 KiB at most) arrives in several
reads and the TLS layer joins them, and a device's largest answer (2.5 KiB) fits in one.
Measured over 200 idle streams (benchmarks/bench_idle.py, and a test here): 256 KiB of
resident memory per connection less, and 12 KiB less again than with a 16 KiB buffer.

The connector lets aiohttp open the TCP connection exactly as it does (resolving, happy
eyeballs, its timeouts and errors), then runs the TLS handshake over it with a subclass of
asyncio's own TLS protocol that differs only in that size: the way `loop.start_tls()`
upgrades a connection. aiohttp checks a pinned fingerprint on the result as on any TLS
connection. A plain (non-TLS) request goes through aiohttp unchanged.
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto
from collections.abc import Callable
from typing import Any, Final

import aiohttp

# Read buffer (ciphertext) and read size (plaintext) of each TLS connection.
TLS_READ_BUFFER_BYTES: Final = 4 * 1024


class _SmallBufferTlsProtocol(sslproto.SSLProtocol):
    """asyncio's TLS protocol, reading through a smaller buffer."""

    max_size = TLS_READ_BUFFER_BYTES


class LeanTlsConnector(aiohttp.TCPConnector):
    """A TCPConnector whose TLS connections each hold 4 KiB of read buffer, not 256 KiB."""

    async def _wrap_create_connection(
        self, *args: Any, **kwargs: Any
    ) -> tuple[asyncio.Transport, Any]:
        sslcontext = kwargs.get("ssl")
        if not isinstance(sslcontext, ssl.SSLContext):
            return await super()._wrap_create_connection(*args, **kwargs)
        app_protocol_factory: Callable[[], asyncio.BaseProtocol] = args[0]
        server_hostname = kwargs.pop("server_hostname", None)
        kwargs["ssl"] = None  # aiohttp opens a plain TCP connection ...
        loop = asyncio.get_running_loop()
        handshake: asyncio.Future[None] = loop.create_future()
        app_protocols: list[asyncio.BaseProtocol] = []

        def tls_protocol() -> _SmallBufferTlsProtocol:
            app_protocol = app_protocol_factory()
            app_protocols.append(app_protocol)
            return _SmallBufferTlsProtocol(
                loop,
                app_protocol,
                sslcontext,
                handshake,
                server_side=False,
                server_hostname=server_hostname,
            )

        # ... and the TLS layer runs over it, as loop.start_tls() would.
        transport, _ = await super()._wrap_create_connection(tls_protocol, *args[1:], **kwargs)
        app_protocol = app_protocols[0]
        timeout: aiohttp.ClientTimeout = kwargs["timeout"]
        try:
            async with asyncio.timeout(timeout.sock_connect):
                await handshake
        except BaseException as err:
            transport.abort()
            if isinstance(err, ssl.CertificateError):
                raise aiohttp.ClientConnectorCertificateError(
                    kwargs["req"].connection_key, err
                ) from err
            if isinstance(err, ssl.SSLError):
                raise aiohttp.ClientConnectorSSLError(kwargs["req"].connection_key, err) from err
            if isinstance(err, OSError):
                raise aiohttp.ClientConnectorError(kwargs["req"].connection_key, err) from err
            raise
        app_transport = getattr(app_protocol, "transport", None)
        if not isinstance(app_transport, asyncio.Transport):
            transport.abort()
            raise aiohttp.ClientConnectionError("the TLS connection gave no transport")
        return app_transport, app_protocol
