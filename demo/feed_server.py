"""A plain HTTP server on 127.0.0.1 for the feed folder, as any static web host would be."""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler


class FeedServer:
    """Serves `root` (feed.json, its .sig, firmware/*.bin) at http://127.0.0.1:<port>/."""

    def __init__(self, root: Path, port: int = 0) -> None:
        self.root = root
        self.port = port  # the bound port once started (any free one when 0)
        self._runner: web.AppRunner | None = None
        # Requests by path ("/feed.json"), so a benchmark sees how often the feed is read.
        self.requests: Counter[str] = Counter()

    @property
    def base_url(self) -> str:
        """The URL of the web root, with a trailing slash."""
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        """Listen on 127.0.0.1."""
        # Our own socket: its port is known at once, also when 0 asked for any free one.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            self.port = listener.getsockname()[1]
        except BaseException:
            listener.close()
            raise
        app = web.Application(middlewares=[self._count])
        app.router.add_static("/", self.root, show_index=True)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.SockSite(runner, listener).start()
        except BaseException:
            listener.close()
            await runner.cleanup()
            raise
        self._runner = runner

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests[request.path] += 1
        return await handler(request)

    async def stop(self) -> None:
        """Close the listening socket and every connection."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
