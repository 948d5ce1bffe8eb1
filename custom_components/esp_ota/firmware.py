"""What every device's install shares: the image cache, the firmware server, the install
queue and the stored update jobs. One FirmwareService per Home Assistant, made when the
integration is set up (async_setup); each entry is handed the parts it uses.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from homeassistant.core import CALLBACK_TYPE, HomeAssistant
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.event import async_call_later
from homeassistant.helpers.storage import Store
from homeassistant.util.hass_dict import HassKey

from . import const
from .const import DEFAULT_MAX_PARALLEL_INSTALLS, DOMAIN, FIRMWARE_CACHE_MAX_BYTES
from .espota.certificates import load_or_create_certificate
from .espota.errors import UpdateJobRecordError
from .espota.firmware_server import FirmwareServer
from .espota.firmware_store import FirmwareStore
from .espota.job_record import UpdateJobRecord

_LOGGER = logging.getLogger(__name__)

FIRMWARE_SERVICE: HassKey[FirmwareService] = HassKey(f"{DOMAIN}_firmware")
JOBS_STORAGE_VERSION: Final = 1
# Progress is saved at most this often; step changes are saved at once.
JOBS_SAVE_DELAY_S: Final = 1.0
# The firmware server's port listens on the LAN only while a device may download from it:
# this often it is checked, and closed when no grant is live (a job revokes its grant when
# it ends); the next install opens it again. A minute keeps it from closing and opening
# between the installs of a batch.
SERVER_IDLE_CHECK_S: Final = 60.0


class InstallQueue:
    """At most `limit` installs run at once across every device; the others wait, in order."""

    def __init__(self) -> None:
        self.limits: dict[str, int] = {}  # entry id -> its option; the smallest applies
        self.running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        """How many installs may run at once."""
        return min(self.limits.values(), default=DEFAULT_MAX_PARALLEL_INSTALLS)

    @property
    def waiting(self) -> int:
        """How many installs wait for a slot."""
        return len(self._waiters)

    def set_limit(self, entry_id: str, limit: int | None) -> None:
        """An entry's option changed (None: the entry went away); wake who may run now."""
        if limit is None:
            self.limits.pop(entry_id, None)
        else:
            self.limits[entry_id] = max(1, limit)
        self._wake()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the `limit` slots for the duration of the block (first come, first
        served: a freed slot is handed to the longest waiter, never taken by a newcomer)."""
        if self.running < self.limit and not self._waiters:
            self.running += 1
        else:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter  # _wake counted this install in `running` before waking it
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.running -= 1  # woken and cancelled at once: pass the slot on
                    self._wake()
                else:
                    self._waiters.remove(waiter)
                raise
        try:
            yield
        finally:
            self.running -= 1
            self._wake()

    def _wake(self) -> None:
        while self._waiters and self.running < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.running += 1
                waiter.set_result(None)


def source_address_for(host: str, port: int) -> str:
    """This machine's address on the route to `host`: where the device can reach us.

    Connecting a UDP socket sends nothing; it only picks the route. Blocking (it may
    resolve a name): run it in the executor."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, port))
        address: str = probe.getsockname()[0]
        return address


class StoredJobs:
    """Each device's last update job, in Home Assistant's storage: a job running when Home
    Assistant stopped is resumed from here, never started again."""

    def __init__(self, hass: HomeAssistant) -> None:
        self._store: Store[dict[str, Any]] = Store(hass, JOBS_STORAGE_VERSION, f"{DOMAIN}.jobs")
        self._jobs: dict[str, dict[str, Any]] = {}  # MAC -> the device's last job record

    async def async_load(self) -> None:
        """Read what was stored."""
        self._jobs = await self._store.async_load() or {}

    def get(self, mac: str) -> UpdateJobRecord | None:
        """The device's last job, as stored; None if none, or if it cannot be read."""
        data = self._jobs.get(mac)
        if data is None:
            return None
        try:
            return UpdateJobRecord.from_dict(data)
        except UpdateJobRecordError as err:
            _LOGGER.warning("Ignoring the unreadable stored update job of %s: %s", mac, err)
            return None

    def save(self, record: UpdateJobRecord, *, now: bool = False) -> None:
        """Remember the job; step changes go to disk at once, progress a little later."""
        self._jobs[record.mac] = record.to_dict()
        self._store.async_delay_save(lambda: self._jobs, 0 if now else JOBS_SAVE_DELAY_S)

    async def async_flush(self) -> None:
        """Write the jobs now (an entry unloads while its job runs)."""
        await self._store.async_save(self._jobs)


class FirmwareService:
    """The image cache, the HTTPS firmware server, the install queue and the stored jobs,
    shared by every entry. The server starts with the first install that needs it, stops
    listening when no download grant has been live for a while (SERVER_IDLE_CHECK_S), starts
    again for the next install, and is dropped when the last entry unloads."""

    def __init__(self, hass: HomeAssistant) -> None:
        self.hass = hass
        self.folder = Path(hass.config.path(DOMAIN))
        self.store = FirmwareStore(
            self.folder / "firmware",
            async_get_clientsession(hass),
            max_bytes=FIRMWARE_CACHE_MAX_BYTES,
        )
        self.queue = InstallQueue()
        self.jobs = StoredJobs(hass)
        self.users: set[str] = set()
        self._server: FirmwareServer | None = None
        self._server_changing: asyncio.Event | None = None  # set once the change is done
        self._cancel_idle_check: CALLBACK_TYPE | None = None

    async def async_load(self) -> None:
        """Read the stored jobs (an update running when Home Assistant stopped)."""
        await self.jobs.async_load()

    def add_user(self, entry_id: str, max_parallel_installs: int) -> None:
        """An entry loads: it counts towards the server's life and the queue's limit."""
        self.users.add(entry_id)
        self.queue.set_limit(entry_id, max_parallel_installs)

    async def async_remove_user(self, entry_id: str) -> None:
        """An entry unloads: write what is pending; the last one stops the server."""
        self.users.discard(entry_id)
        self.queue.set_limit(entry_id, None)
        await self.jobs.async_flush()
        if not self.users:
            await self.async_close()

    # --- the firmware server ----------------------------------------------------

    async def async_server_for(self, advertised_host: str) -> FirmwareServer:
        """The running server, its certificate valid for the host devices are told to use."""
        while True:
            server = self._server
            if (
                server is not None
                and server.listening
                and server.certificate.covers(advertised_host)
            ):
                return server
            if (changed := self._server_changing) is not None:
                # Being started (or given a new certificate) for another install: wait for
                # that, then look again, all together rather than one after another.
                await changed.wait()
                continue
            changed = self._server_changing = asyncio.Event()
            try:
                await self._async_serve_host(advertised_host)
            finally:
                self._server_changing = None
                changed.set()

    async def _async_serve_host(self, advertised_host: str) -> None:
        """Start the server, or renew its certificate, so that it covers the host."""
        server = self._server
        if server is not None and server.certificate.covers(advertised_host):
            await server.start()  # stopped while idle: the same server (its grants) again
            self._schedule_idle_check()
            return
        hosts = [advertised_host]
        if server is not None:
            hosts += server.certificate.hosts()
        certificate = await self.hass.async_add_executor_job(
            load_or_create_certificate, self.folder / "server", hosts
        )
        if server is None:
            server = FirmwareServer(
                host=const.FIRMWARE_SERVER_HOST,
                port=const.FIRMWARE_SERVER_PORT,
                certificate=certificate,
            )
            await server.start()
            self._server = server
            _LOGGER.debug("Firmware server listening on port %s", server.port)
        else:
            await server.set_certificate(certificate)
            if not server.listening:
                await server.start()
        self._schedule_idle_check()

    def _schedule_idle_check(self) -> None:
        if self._cancel_idle_check is None:
            self._cancel_idle_check = async_call_later(
                self.hass, SERVER_IDLE_CHECK_S, self._async_idle_check
            )

    async def _async_idle_check(self, _now: datetime) -> None:
        """Stop listening when no device may download; otherwise look again later."""
        self._cancel_idle_check = None
        server = self._server
        if server is None or not server.listening or self._server_changing is not None:
            return
        if server.has_live_grant():
            self._schedule_idle_check()
            return
        changed = self._server_changing = asyncio.Event()  # installs asking wait for this
        try:
            await server.close()
            _LOGGER.debug("Firmware server stopped listening: no download grant is live")
        finally:
            self._server_changing = None
            changed.set()

    @property
    def server(self) -> FirmwareServer | None:
        """The firmware server, once an install has started it."""
        return self._server

    async def async_close(self) -> None:
        """Stop serving (the last entry unloaded, Home Assistant stops)."""
        if self._cancel_idle_check is not None:
            self._cancel_idle_check()
            self._cancel_idle_check = None
        if self._server is not None:
            await self._server.close()
            self._server = None
