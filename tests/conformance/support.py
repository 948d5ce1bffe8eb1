"""What conformance tests share: images and how they are served, waits, event recording,
raw HTTP for the requests DeviceClient would never send.

Every wait is bounded (a broken device fails a test, it never hangs the run) and polls
with the device's short-timeout client, tolerating a device that is away (rebooting).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Final, Self, cast

import aiohttp
from multidict import CIMultiDictProxy

from custom_components.esp_ota.espota.certificates import make_server_certificate
from custom_components.esp_ota.espota.device_client import DeviceClient
from custom_components.esp_ota.espota.errors import DeviceError, ImageError
from custom_components.esp_ota.espota.firmware_server import FirmwareServer
from custom_components.esp_ota.espota.firmware_store import StoredImage
from custom_components.esp_ota.espota.image import AppDescriptor, ImageInfo, parse_image
from custom_components.esp_ota.espota.image_builder import build_app_image
from custom_components.esp_ota.espota.protocol import (
    DeviceEvent,
    DeviceInfo,
    EventType,
    OtaState,
    OtaStatus,
)

from .devices import (
    DEFAULT_PROJECT,
    IDF_VER,
    IMAGE_SIZE,
    POLL_S,
    REBOOT_DELAY_S,
    DeviceFailureError,
    DeviceUnderTest,
    image_seed,
)
from .fault_proxy import FaultProxy

API: Final = "/api/v1"
FINAL_STATES: Final = frozenset({OtaState.SUCCEEDED, OtaState.FAILED, OtaState.ABORTED})
# The order GET /api/v1/ota moves through during a successful update.
STATE_ORDER: Final = (
    OtaState.IDLE,
    OtaState.CONNECTING,
    OtaState.DOWNLOADING,
    OtaState.VERIFYING,
    OtaState.REBOOTING,
    OtaState.SUCCEEDED,
)
UPDATE_TIMEOUT_S: Final = 20.0  # an unthrottled 48 KiB update, reboot included
WAIT_TIMEOUT_S: Final = 10.0
# uptime_s may count in ticks (10 ms on FreeRTOS) and be rounded: readings this much
# apart are not taken as a reboot (a restart keeps a device away far longer).
UPTIME_SLACK_S: Final = 0.05
UNAUTHORIZED: Final = "HTTPD_401_UNAUTHORIZED"
WWW_AUTHENTICATE: Final = 'Bearer realm="esp-ota"'
ENDPOINTS: Final = (
    ("GET", f"{API}/info"),
    ("GET", f"{API}/ota"),
    ("POST", f"{API}/ota"),
    ("POST", f"{API}/ota/abort"),
    ("POST", f"{API}/ota/confirm"),
    ("POST", f"{API}/ota/rollback"),
    ("POST", f"{API}/reboot"),
    ("GET", f"{API}/events"),
)


# --- images --------------------------------------------------------------------------


def make_image(
    version: str,
    *,
    project: str = DEFAULT_PROJECT,
    chip: str = "esp32",
    secure_version: int = 0,
    size: int = IMAGE_SIZE,
    min_chip_rev_full: int = 0,
    max_chip_rev_full: int = 399,
) -> bytes:
    """A valid app image (the library's builder), different for every set of arguments."""
    return build_app_image(
        project=project,
        version=version,
        chip=chip,
        secure_version=secure_version,
        size=size,
        min_chip_rev_full=min_chip_rev_full,
        max_chip_rev_full=max_chip_rev_full,
        idf_ver=IDF_VER,
        seed=image_seed(project, version, chip, secure_version, size, min_chip_rev_full),
    )


def descriptor(image: bytes) -> AppDescriptor:
    """The image's esp_app_desc_t, read with the library's parser."""
    return parse_image(image).app


def sha256_hex(data: bytes) -> str:
    """SHA-256 of `data`, hex."""
    return hashlib.sha256(data).hexdigest()


@cache
def _stand_in_info() -> ImageInfo:
    return parse_image(build_app_image(size=1024))


def _info_of(data: bytes) -> ImageInfo:
    """The image's info; a broken file (which a FirmwareStore would never hold) gets a
    stand-in's: FirmwareServer serves a StoredImage's path, sha256 and size only."""
    try:
        return parse_image(data)
    except ImageError:
        return _stand_in_info()


# --- serving images ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Offer:
    """What POST /api/v1/ota says about one served file."""

    url: str
    sha256: str
    size: int
    version: str
    cert_pem: str
    headers: Mapping[str, str]

    def body(self) -> dict[str, Any]:
        """The request body, as DeviceClient.start_ota sends it."""
        return {
            "url": self.url,
            "sha256": self.sha256,
            "size": self.size,
            "version": self.version,
            "cert_pem": self.cert_pem,
            "headers": dict(self.headers),
        }

    def but(self, **changes: Any) -> Offer:
        """A copy with some fields changed."""
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Served:
    """One response of the firmware server (from its debug log line)."""

    method: str
    first: int  # first byte offset
    last: int  # last byte offset (inclusive)
    size: int  # of the file
    status: int


class _ServedLog(logging.Handler):
    """Collects the firmware server's per-response debug lines
    ("%s %s bytes %d-%d/%d (%d) to device %s")."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.served: list[Served] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if (
            isinstance(record.msg, str)
            and record.msg.startswith("%s %s bytes %d-%d/%d (%d)")
            and isinstance(args, tuple)
            and len(args) >= 6
        ):
            method, _path, first, last, size, status = args[:6]
            self.served.append(
                Served(
                    str(method), int(str(first)), int(str(last)), int(str(size)), int(str(status))
                )
            )


class FirmwareHost:
    """The library's FirmwareServer (HTTPS, Bearer grants, Range) behind a FaultProxy:
    every URL given to a device points at the proxy. `served` lists what the server
    answered (method, byte range, status), read from its debug log."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._server: FirmwareServer | None = None
        self._proxy: FaultProxy | None = None
        self._log = _ServedLog()
        self._logger = logging.getLogger(FirmwareServer.__module__)
        self._level = self._logger.level

    @property
    def served(self) -> list[Served]:
        """Every response sent so far, in order."""
        return list(self._log.served)

    @property
    def server(self) -> FirmwareServer:
        """The firmware server."""
        if self._server is None:
            raise RuntimeError("the firmware host is not started")
        return self._server

    @property
    def proxy(self) -> FaultProxy:
        """The proxy in front of it."""
        if self._proxy is None:
            raise RuntimeError("the firmware host is not started")
        return self._proxy

    async def start(self) -> None:
        """Listen on free 127.0.0.1 ports (the certificate covers 127.0.0.1)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._logger.addHandler(self._log)
        self._logger.setLevel(logging.DEBUG)
        certificate = await asyncio.to_thread(make_server_certificate, ["127.0.0.1"])
        self._server = FirmwareServer(host="127.0.0.1", port=0, certificate=certificate)
        await self._server.start()
        self._proxy = FaultProxy("127.0.0.1", self._server.port)
        await self._proxy.start()

    async def close(self) -> None:
        """Cut the proxied connections, then stop the server."""
        if self._proxy is not None:
            await self._proxy.close()
        if self._server is not None:
            await self._server.close()
        self._logger.removeHandler(self._log)
        self._logger.setLevel(self._level)

    def publish(self, data: bytes, version: str, *, device_id: str = "dut") -> Offer:
        """Serve `data` (through the proxy) and describe it as an OTA request."""
        digest = sha256_hex(data)
        path = self.folder / f"{digest}.bin"
        path.write_bytes(data)
        stored = StoredImage(path=path, sha256=digest, size=len(data), info=_info_of(data))
        grant = self.server.grant(stored, device_id=device_id, ttl_s=600)
        return Offer(
            url=f"https://127.0.0.1:{self.proxy.port}{grant.path}",
            sha256=digest,
            size=len(data),
            version=version,
            cert_pem=self.server.cert_pem,
            headers=FirmwareServer.headers(grant),
        )


async def start_update(dut: DeviceUnderTest, offer: Offer) -> str:
    """POST /api/v1/ota through the library's client; returns the ota_id."""
    return await dut.client.start_ota(
        url=offer.url,
        sha256=offer.sha256,
        size=offer.size,
        version=offer.version,
        cert_pem=offer.cert_pem,
        headers=offer.headers,
    )


# --- waits ---------------------------------------------------------------------------


async def _poll[T](
    dut: DeviceUnderTest,
    what: str,
    read: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    within_s: float,
) -> T:
    """Call `read` until `done` holds for its answer; errors (the device away) are retried."""
    last: object = "nothing yet"
    try:
        async with asyncio.timeout(within_s):
            while True:
                dut.check_alive()
                try:
                    value = await read()
                except DeviceError as err:
                    last = err
                else:
                    last = value
                    if done(value):
                        return value
                await asyncio.sleep(POLL_S)
    except TimeoutError:
        raise DeviceFailureError(
            f"{dut}: {what} not seen within {within_s} s; last answer: {last!r}"
        ) from None


async def wait_info(
    dut: DeviceUnderTest,
    what: str,
    done: Callable[[DeviceInfo], bool],
    within_s: float = WAIT_TIMEOUT_S,
) -> DeviceInfo:
    """Poll GET /api/v1/info until `done` holds (the device may be away meanwhile)."""
    return await _poll(dut, what, dut.poll_client.info, done, within_s)


async def wait_status(
    dut: DeviceUnderTest,
    what: str,
    done: Callable[[OtaStatus], bool],
    within_s: float = WAIT_TIMEOUT_S,
) -> OtaStatus:
    """Poll GET /api/v1/ota until `done` holds (the device may be away meanwhile)."""
    return await _poll(dut, what, dut.poll_client.ota_status, done, within_s)


async def wait_job_end(
    dut: DeviceUnderTest, ota_id: str, within_s: float = UPDATE_TIMEOUT_S
) -> OtaStatus:
    """The job's final status: succeeded (after the reboot), failed or aborted."""
    return await wait_status(
        dut,
        f"the end of job {ota_id}",
        lambda status: status.ota_id == ota_id and status.state in FINAL_STATES,
        within_s,
    )


async def wait_downloading(dut: DeviceUnderTest, ota_id: str, at_least: int = 1) -> OtaStatus:
    """Until the job has written `at_least` bytes (and is still downloading)."""
    status = await wait_status(
        dut,
        f"job {ota_id} downloading with >= {at_least} bytes written",
        lambda s: (
            s.ota_id == ota_id
            and (s.state is not OtaState.DOWNLOADING or s.bytes_written >= at_least)
            and s.state is not OtaState.CONNECTING
        ),
    )
    assert status.state is OtaState.DOWNLOADING, f"the job is {status}, not downloading"
    return status


async def update(dut: DeviceUnderTest, offer: Offer) -> tuple[str, OtaStatus, DeviceInfo]:
    """Start an update and wait for its end; returns (ota_id, final status, info then)."""
    ota_id = await start_update(dut, offer)
    status = await wait_job_end(dut, ota_id)
    return ota_id, status, await dut.poll_client.info()


async def update_successfully(dut: DeviceUnderTest, offer: Offer) -> DeviceInfo:
    """An update that must succeed: the device comes back on it in pending_verify."""
    ota_id, status, info = await update(dut, offer)
    assert status.state is OtaState.SUCCEEDED, f"update {offer.version} ended {status}"
    assert info.version == offer.version, info
    assert info.last_ota.ota_id == ota_id, info
    return info


@dataclass(frozen=True, slots=True)
class UptimeMark:
    """The device's uptime as read at a known moment: a later answer with a smaller
    uptime than the running firmware could have comes from a firmware booted since."""

    info: DeviceInfo
    received_at: float  # time.monotonic() when the answer arrived

    def rebooted_since(self, info: DeviceInfo, sent_at: float) -> bool:
        """Whether `info` (asked at `sent_at`) must come from a later boot."""
        least_if_same_boot = self.info.uptime_s + (sent_at - self.received_at)
        return info.uptime_s < least_if_same_boot - UPTIME_SLACK_S


async def mark_uptime(dut: DeviceUnderTest) -> UptimeMark:
    """Read GET /api/v1/info now (see UptimeMark)."""
    info = await dut.client.info()
    return UptimeMark(info, time.monotonic())


async def wait_rebooted(
    dut: DeviceUnderTest, mark: UptimeMark, within_s: float = WAIT_TIMEOUT_S
) -> DeviceInfo:
    """Until the device answers from a boot later than `mark` (its uptime_s, which
    esp_timer_get_time() counts from the boot, says so); it may be away meanwhile."""
    last: object = "nothing yet"
    try:
        async with asyncio.timeout(within_s):
            while True:
                dut.check_alive()
                sent_at = time.monotonic()
                try:
                    info = await dut.poll_client.info()
                except DeviceError as err:
                    last = err
                else:
                    last = info
                    if mark.rebooted_since(info, sent_at):
                        return info
                await asyncio.sleep(POLL_S)
    except TimeoutError:
        raise DeviceFailureError(
            f"{dut}: no reboot seen within {within_s} s (uptime_s was {mark.info.uptime_s}); "
            f"last answer: {last!r}"
        ) from None


async def reboot(dut: DeviceUnderTest) -> DeviceInfo:
    """POST /api/v1/reboot and wait until the device answers from its new boot."""
    mark = await mark_uptime(dut)
    await dut.client.reboot()
    return await wait_rebooted(dut, mark)


async def assert_not_rebooted(dut: DeviceUnderTest, mark: UptimeMark) -> DeviceInfo:
    """The device answers from the same boot as at `mark` (after a pause long enough for
    a restart it might have scheduled to show)."""
    await asyncio.sleep(REBOOT_DELAY_S * 3)
    sent_at = time.monotonic()
    info = await dut.client.info()
    assert not mark.rebooted_since(info, sent_at), (
        f"{dut} rebooted: uptime {info.uptime_s} s, was {mark.info.uptime_s} s "
        f"{sent_at - mark.received_at:.3f} s earlier"
    )
    assert info.reset_reason == mark.info.reset_reason, info
    return info


def assert_on(
    info: DeviceInfo, version: str, partition: str, *, image_state: str | None = None
) -> None:
    """The device runs `version` from `partition`, which is also the boot partition."""
    assert (info.version, info.running_partition, info.boot_partition) == (
        version,
        partition,
        partition,
    ), info
    if image_state is not None:
        assert info.image_state == image_state, info


# --- events --------------------------------------------------------------------------


@dataclass(slots=True)
class _StreamWatch:
    opened: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class EventRecorder:
    """Follows the device's event stream with DeviceClient.events() (reconnecting, with
    Last-Event-ID) and keeps every event. `start()` returns once the device has answered
    the stream's request, so no event of a job started afterwards is missed."""

    def __init__(self, dut: DeviceUnderTest) -> None:
        self.dut = dut
        self.events: list[DeviceEvent] = []
        self._watch = _StreamWatch()
        self._changed = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    @property
    def streams_opened(self) -> int:
        """How many times the device accepted the stream (1 + reconnections)."""
        return self._watch.opened

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self, within_s: float = WAIT_TIMEOUT_S) -> None:
        """Open the stream; return once the device answered it."""
        watch = self._watch

        async def on_request_end(
            _session: aiohttp.ClientSession,
            _context: SimpleNamespace,
            params: aiohttp.TraceRequestEndParams,
        ) -> None:
            if params.url.path == f"{API}/events" and params.response.status == 200:
                watch.opened += 1
                watch.changed.set()

        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(on_request_end)
        self._session = aiohttp.ClientSession(trace_configs=[trace])
        client = self.dut.new_client(self._session)
        self._task = asyncio.create_task(self._follow(client), name=f"events of {self.dut}")
        try:
            async with asyncio.timeout(within_s):
                while watch.opened == 0:
                    self._raise_if_broken()
                    watch.changed.clear()
                    await watch.changed.wait()
        except TimeoutError:
            await self.stop()
            raise DeviceFailureError(f"{self.dut}: the event stream did not open") from None
        except BaseException:
            await self.stop()
            raise

    async def _follow(self, client: DeviceClient) -> None:
        try:
            events = cast(AsyncGenerator[DeviceEvent], client.events())
            async with contextlib.aclosing(events):
                async for event in events:
                    self.events.append(event)
                    self._changed.set()
        except Exception as err:  # reported by the waits
            self._error = err
        finally:
            self._changed.set()
            self._watch.changed.set()

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise DeviceFailureError(f"{self.dut}: the event stream failed: {self._error!r}")
        if self._task is not None and self._task.done() and not self._task.cancelled():
            raise DeviceFailureError(f"{self.dut}: the event stream ended")

    async def stop(self) -> None:
        """Close the stream."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def wait_for(
        self,
        what: str,
        done: Callable[[DeviceEvent], bool],
        within_s: float = UPDATE_TIMEOUT_S,
    ) -> DeviceEvent:
        """The first recorded event for which `done` holds (waiting for it if needed)."""
        seen = 0
        try:
            async with asyncio.timeout(within_s):
                while True:
                    for event in self.events[seen:]:
                        if done(event):
                            return event
                    seen = len(self.events)
                    self._raise_if_broken()
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise DeviceFailureError(
                f"{self.dut}: event {what} not seen within {within_s} s; got {self.types()}"
            ) from None

    def job(self, ota_id: str) -> list[DeviceEvent]:
        """The events of one job: from its `start` on, until another job's start; events
        of the job carry its ota_id or none."""
        events: list[DeviceEvent] = []
        started = False
        for event in self.events:
            if event.type is EventType.START and event.ota_id == ota_id:
                started = True
            elif event.type is EventType.START and started and event.ota_id != ota_id:
                break
            if started:
                assert event.ota_id in (None, ota_id), f"an event of another job: {event}"
                events.append(event)
        return events

    def types(self, events: list[DeviceEvent] | None = None) -> list[str]:
        """Event types in order, runs of write_flash collapsed into one."""
        out: list[str] = []
        for event in self.events if events is None else events:
            if event.type is EventType.WRITE_FLASH and out and out[-1] == EventType.WRITE_FLASH:
                continue
            out.append(event.type.value)
        return out


# --- raw HTTP ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawResponse:
    """Status, headers and body of one raw request."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON (fails the test if it is not)."""
        try:
            return json.loads(self.body)
        except ValueError as err:
            raise AssertionError(
                f"HTTP {self.status} body is not JSON: {self.body[:200]!r}"
            ) from err

    def error(self) -> str:
        """The `error` of an error body."""
        data = self.json()
        assert isinstance(data, dict), data
        assert isinstance(data.get("error"), str), data
        assert isinstance(data.get("message"), str), data
        return str(data["error"])


def pinned(dut: DeviceUnderTest) -> aiohttp.Fingerprint:
    """The device's certificate pin, for raw requests."""
    return aiohttp.Fingerprint(bytes.fromhex(dut.cert_fingerprint))


class _Default:
    pass


BEARER: Final = _Default()


async def raw_request(
    dut: DeviceUnderTest,
    method: str,
    path: str,
    *,
    authorization: str | _Default | None = BEARER,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> RawResponse:
    """One request as given (pinned; Connection: close). `authorization` defaults to the
    device's Bearer secret; None sends no Authorization header."""
    sent = {"Connection": "close", **(headers or {})}
    if isinstance(authorization, _Default):
        sent["Authorization"] = f"Bearer {dut.secret}"
    elif authorization is not None:
        sent["Authorization"] = authorization
    if body is not None:
        sent.setdefault("Content-Type", "application/json")
    async with (
        asyncio.timeout(WAIT_TIMEOUT_S),
        dut.session.request(
            method,
            f"https://{dut.host}:{dut.port}{path}",
            data=body,
            headers=sent,
            ssl=pinned(dut),
        ) as response,
    ):
        if response.status == 200 and path == f"{API}/events":
            # A stream that was accepted: its headers say enough, do not wait for it.
            return RawResponse(response.status, response.headers, b"")
        return RawResponse(response.status, response.headers, await response.read())


@dataclass(frozen=True, slots=True)
class SseItem:
    """One thing read from an event stream: a comment, or an event."""

    comment: str | None = None
    id: str | None = None
    event: str | None = None
    data: dict[str, Any] | None = None


class RawEventStream:
    """GET /api/v1/events read line by line with aiohttp (pinned), for what DeviceClient
    hides: comments, the id and event lines, Last-Event-ID replay."""

    def __init__(self, dut: DeviceUnderTest, last_event_id: str | None = None) -> None:
        self.dut = dut
        self.last_event_id = last_event_id
        self._response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> Self:
        headers = {"Authorization": f"Bearer {self.dut.secret}", "Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        async with asyncio.timeout(WAIT_TIMEOUT_S):
            self._response = await self.dut.session.get(
                f"https://{self.dut.host}:{self.dut.port}{API}/events",
                headers=headers,
                ssl=pinned(self.dut),
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
            )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()

    @property
    def response(self) -> aiohttp.ClientResponse:
        """The stream's response (status, headers)."""
        assert self._response is not None
        return self._response

    async def next(self, within_s: float = WAIT_TIMEOUT_S) -> SseItem:
        """The next comment or event; TimeoutError if none comes in time."""
        fields: dict[str, str] = {}
        async with asyncio.timeout(within_s):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    raise EOFError("the event stream ended")
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if fields:
                        data = json.loads(fields["data"]) if "data" in fields else None
                        assert data is None or isinstance(data, dict), data
                        return SseItem(id=fields.get("id"), event=fields.get("event"), data=data)
                    continue
                if line.startswith(":"):
                    if not fields:
                        return SseItem(comment=line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                fields[name] = f"{fields[name]}\n{value}" if name in fields else value

    async def next_event(self, within_s: float = WAIT_TIMEOUT_S) -> SseItem:
        """The next event, skipping comments (keep-alives)."""
        while True:
            item = await self.next(within_s)
            if item.comment is None:
                return item
