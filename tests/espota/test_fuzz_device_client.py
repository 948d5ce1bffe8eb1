"""The device client, and the update job that uses it, against a hostile device.

Whatever a device answers (JSON of any shape, size, depth and number, bytes that are not
JSON, any status, a body in drips, an event stream of garbage, a malformed HTTP response),
the client raises the library's DeviceError types only, and an update job ends finished.
Real HTTPS on 127.0.0.1: test_device_client.py's stub device for answers and events, a raw
TLS server for what aiohttp's server would never write. Hypothesis profile "ci" (tests/
conftest.py) by default; HYPOTHESIS_PROFILE=long for a long run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custom_components.esp_ota.espota import update_job
from custom_components.esp_ota.espota.device_client import MAX_ANSWER_BYTES, DeviceClient
from custom_components.esp_ota.espota.errors import DeviceError
from custom_components.esp_ota.espota.image_source import PreparedImage
from custom_components.esp_ota.espota.job_record import (
    FailureReason,
    UpdateJobRecord,
    UpdateStep,
    new_record,
)
from custom_components.esp_ota.espota.json_reader import MAX_INTEGER, MIN_INTEGER
from custom_components.esp_ota.espota.protocol import DeviceEvent, DeviceInfo, OtaStatus
from custom_components.esp_ota.espota.update_job import JobTimeouts, UpdateJob
from tests.espota import test_device_client as hand_made
from tests.espota.test_device_client import (
    INFO,
    SECRET,
    STATUS,
    Handler,
    StubDevice,
    client_of,
    endless,
    padded,
)
from tests.simulator.firmware_server import make_certificate

# test_device_client.py's fixtures: its stub device and the injected session.
stub = hand_made.stub
session = hand_made.session

# The stub device lives as long as the test function, across its examples: that is the
# point (one server, one certificate), not an oversight.
FUZZ = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])

# --- hostile bodies --------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([MAX_INTEGER, MAX_INTEGER + 1, MIN_INTEGER - 1, 10**400])
    | st.floats()  # NaN and Infinity too: json.dumps writes them, no device should
    | st.text(max_size=20)
    | st.sampled_from(["\ud800", "\udfff", "\x00", "é"])
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
EVENT = {"id": 7, "type": "write_flash", "ota_id": "abc123", "bytes_written": 4096}
REFUSAL = {"error": "ESP_FAIL", "message": "m"}
# What each request is answered with when all goes well.
DOCUMENT_OF: dict[str, dict[str, Any]] = {
    "info": INFO,
    "ota_status": STATUS,
    "start_ota": {"ota_id": "abc123"},
    "abort_ota": {"ok": True},
    "confirm": {"ok": True},
    "rollback": {"ok": True},
    "reboot": {"ok": True},
}
REQUESTS: dict[str, Callable[[DeviceClient], Awaitable[Any]]] = {
    "info": DeviceClient.info,
    "ota_status": DeviceClient.ota_status,
    "start_ota": lambda client: client.start_ota(
        url="https://h/f.bin", sha256="ab" * 32, size=4096, version="2.0.0", cert_pem="PEM"
    ),
    "abort_ota": DeviceClient.abort_ota,
    "confirm": DeviceClient.confirm,
    "rollback": DeviceClient.rollback,
    "reboot": DeviceClient.reboot,
}
PATHS = ["/info", "/ota", "/ota/abort", "/ota/confirm", "/ota/rollback", "/reboot"]


def dumped(value: Any) -> bytes:
    return json.dumps(value).encode()


def nested_text(depth: int, opening: bytes) -> bytes:
    if opening == b"[":
        return b"[" * depth + b"[]" + b"]" * depth
    return b'{"k":' * depth + b"{}" + b"}" * depth


# A field's raw text: deep (to 400 KB), huge, or not JSON.
DEPTHS = st.sampled_from([16, 17, 1000, 200_000]) | st.integers(1, 200_000)
RAW_VALUES = st.one_of(
    DEPTHS.map(lambda depth: nested_text(depth, b"[")),
    DEPTHS.map(lambda depth: nested_text(depth, b"{")),
    (st.sampled_from([19, 20, 400, 5000]) | st.integers(1, 5000)).map(lambda n: b"9" * n),
    st.sampled_from([b"1e999", b"-1e999", b"NaN", b"Infinity", b'"\\ud800"', b'"\xff"']),
)


def fields_of(document: dict[str, Any]) -> list[tuple[str, ...]]:
    """Where a value can go: each field (a nested object's too), and a new one."""
    paths: list[tuple[str, ...]] = [("extra",)]
    for name, value in document.items():
        paths.append((name,))
        if isinstance(value, dict):
            paths += [(name, inner) for inner in value]
    return paths


def bent(document: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """The document with `value` at `path`."""
    name, *rest = path
    if rest:
        return {**document, name: bent(document[name], tuple(rest), value)}
    return {**document, name: value}


def bodies(document: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """What a device might send instead of `document`: the document with one field (or
    a new one) holding any JSON value, or raw text (deep, huge, not JSON), or a key twice;
    JSON of any shape; bytes; the document padded around the cap; a few odd ones."""
    paths = st.sampled_from(fields_of(document))
    return st.one_of(
        st.builds(lambda path, value: dumped(bent(document, path, value)), paths, JSON_VALUES),
        st.builds(
            lambda path, raw: dumped(bent(document, path, "@")).replace(b'"@"', raw),
            paths,
            RAW_VALUES,
        ),
        st.sampled_from(list(document)).map(
            lambda name: dumped(document)[:-1] + b", " + dumped({name: document[name]})[1:]
        ),
        JSON_VALUES.map(dumped),
        st.binary(max_size=300),
        st.integers(MAX_ANSWER_BYTES - 64, 3 * MAX_ANSWER_BYTES).map(
            lambda size: padded(document, size)
        ),
        st.sampled_from([b"", b"null", b"\xef\xbb\xbf{}", dumped(document) * 2]),
    )


@dataclass(frozen=True)
class Answer:
    """One scripted HTTP answer: status, body, and how it is delivered."""

    status: int
    body: bytes
    chunked: bool  # no Content-Length
    pieces: int  # written in this many parts
    pause_s: float  # between the parts

    def handler(self) -> Handler:
        async def answer(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(
                status=self.status, headers={"Content-Type": "application/json"}
            )
            if not self.chunked:
                response.content_length = len(self.body)
            await response.prepare(request)
            step = max(1, -(-len(self.body) // self.pieces))
            with contextlib.suppress(ConnectionError):
                for start in range(0, len(self.body), step):
                    await response.write(self.body[start : start + step])
                    await asyncio.sleep(self.pause_s)
            return response

        return answer


STATUSES = st.one_of(
    st.sampled_from([200, 202]),
    st.sampled_from([301, 302, 400, 401, 404, 409, 500]),
    st.integers(200, 599),
)


@st.composite
def exchanges(draw: st.DrawFn) -> tuple[str, Answer]:
    """A request, and the device's answer to it."""
    request = draw(st.sampled_from(list(REQUESTS)))
    status = draw(STATUSES)
    document = REFUSAL if status >= 400 else DOCUMENT_OF[request]
    answer = Answer(
        status=status,
        body=draw(bodies(document)),
        chunked=draw(st.booleans()),
        pieces=draw(st.integers(1, 8)),
        pause_s=draw(st.sampled_from([0.0, 0.001])),
    )
    return request, answer


def check_values(value: Any) -> None:
    """A model the client returned holds what Home Assistant can store: text that is
    Unicode, integers of 64 bits, finite numbers."""
    if isinstance(value, DeviceInfo | OtaStatus | DeviceEvent):
        for name in value.__slots__:
            check_values(getattr(value, name))
    elif isinstance(value, str):
        value.encode()
    elif isinstance(value, int):
        assert MIN_INTEGER <= value <= MAX_INTEGER
    elif isinstance(value, float):
        assert abs(value) < float("inf")


@FUZZ
@given(exchange=exchanges())
async def test_fuzz_answers(
    stub: StubDevice, session: aiohttp.ClientSession, exchange: tuple[str, Answer]
) -> None:
    """Any answer to any request: a model, or a DeviceError."""
    request, answer = exchange
    stub.requests.clear()  # one server for every example: keep what it holds small
    for path in PATHS:
        stub.routes[f"/api/v1{path}"] = answer.handler()
    try:
        result = await REQUESTS[request](client_of(stub, session, timeout=5))
    except DeviceError:
        return
    check_values(result)


# Pieces of a stream: whole events (a data line and the empty line that ends it), lines,
# bytes.
SSE_PIECES = st.one_of(
    bodies(EVENT)
    .filter(lambda body: len(body) < 100_000)
    .map(lambda body: b"data: " + body + b"\n\n"),
    st.just(b"data: " + dumped(EVENT) + b"\n\n"),
    st.sampled_from([b": keep-alive\n", b"id: 7\n", b"event: x\n", b"\n", b"\xff\xfe\n"]),
    st.sampled_from([b"data\n", b"data: {\r\n", b'data: "id": 1}\r\n\r\n']),
    st.binary(max_size=40),
)


@FUZZ
@given(pieces=st.lists(SSE_PIECES, max_size=6))
async def test_fuzz_event_streams(
    stub: StubDevice, session: aiohttp.ClientSession, pieces: list[bytes]
) -> None:
    """Any event stream: events, or a DeviceError."""
    stub.requests.clear()
    stub.stream(b"".join(pieces))
    try:
        async for event in client_of(stub, session, timeout=5).events(reconnect=False):
            check_values(event)
    except DeviceError:
        return


# --- malformed HTTP, from a raw TLS server ----------------------------------------------


@dataclass
class RawDevice:
    """Answers every connection with `response` (raw bytes after TLS), then closes."""

    port: int = 0
    fingerprint: str = ""
    response: bytes = b""


@pytest.fixture
async def raw_device(socket_enabled: None) -> AsyncIterator[RawDevice]:
    certificate = make_certificate("raw device")
    device = RawDevice(fingerprint=certificate.fingerprint)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(device.response)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=certificate.server_context())
    device.port = server.sockets[0].getsockname()[1]
    yield device
    server.close()
    await server.wait_closed()


STATUS_LINES = st.sampled_from(
    [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 409 Conflict",
        b"HTTP/1.0 200 OK",
        b"HTTP/1.1 999 ?",
        b"HTTP/1.1 200",
        b"HTTP/2 200",
        b"garbage",
        b"",
        b"HTTP/1.1 200 OK\x00",
    ]
)
HEADERS = st.sampled_from(
    [
        b"Content-Type: application/json",
        b"Content-Length: 0",
        b"Content-Length: 5",
        b"Content-Length: 70000",
        b"Content-Length: -1",
        b"Content-Length: 99999999999999999999999",
        b"Content-Length: x",
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: gzip, chunked",
        b"Content-Encoding: gzip",
        b"Content-Encoding: deflate",
        b"Connection: keep-alive",
        b"X-Long: " + b"a" * 9000,
        b"no colon",
        b"Location: https://127.0.0.1:1/",
    ]
)
CHUNKS = st.sampled_from(
    [b"5\r\n{}{}{\r\n0\r\n\r\n", b"ffffffffffffffffff\r\n", b"2\r\n{}\r\n0\r\n\r\n", b"z\r\n"]
)


RAW_RESPONSES = st.builds(
    lambda status_line, headers, body: b"\r\n".join([status_line, *headers, b"", body]),
    STATUS_LINES,
    st.lists(HEADERS, max_size=4),
    bodies(STATUS) | CHUNKS,
)


@FUZZ
@given(response=RAW_RESPONSES, request=st.sampled_from(list(REQUESTS)))
async def test_fuzz_malformed_http(
    raw_device: RawDevice, session: aiohttp.ClientSession, response: bytes, request: str
) -> None:
    """A response that is not even HTTP, or lies about its length or encoding: a
    DeviceError."""
    raw_device.response = response
    client = DeviceClient(
        session,
        "127.0.0.1",
        raw_device.port,
        SECRET,
        cert_fingerprint=raw_device.fingerprint,
        timeout=5,
    )
    try:
        result = await REQUESTS[request](client)
    except DeviceError:
        return
    check_values(result)


# --- the update job against a hostile device ---------------------------------------------

REBOOT_S = 1.0
TIMEOUTS = JobTimeouts(
    start_s=1.0, stall_s=2.0, reboot_s=REBOOT_S, confirm_s=1.0, total_s=20.0, poll_s=0.05
)
# Generous: the job's own bound here is reboot_s plus one request's floor.
WITHIN_S = 30.0


class NoImage:
    """The image source of a job past its start: never asked to prepare."""

    async def prepare(self) -> PreparedImage:
        raise AssertionError("a job resumed at rebooting prepares nothing")

    def bytes_served(self) -> int | None:
        return None


def rebooting_record() -> UpdateJobRecord:
    """A record stored at REBOOTING (what a restart of Home Assistant resumes)."""
    record = new_record(
        mac="24:0a:c4:00:00:01", from_version="1.2.0", to_version="2.0.0", from_partition="ota_1"
    )
    now = time.time()
    stored = replace(
        record,
        sha256="cd" * 32,
        size=65536,
        step=UpdateStep.REBOOTING,
        start_sent=True,
        ota_id="abc123",
        bytes_written=65536,
        step_since=now,
        started_at=now,
    )
    return UpdateJobRecord.from_dict(json.loads(json.dumps(stored.to_dict())))


def storable(record: UpdateJobRecord) -> None:
    """Home Assistant's storage takes it: UTF-8 JSON."""
    json.dumps(record.to_dict(), ensure_ascii=False, allow_nan=False).encode()


async def run_job(client: DeviceClient, on_change: Callable[[UpdateJobRecord], None]) -> Any:
    job = UpdateJob(client, rebooting_record(), NoImage(), on_change=on_change, timeouts=TIMEOUTS)
    async with asyncio.timeout(WITHIN_S):
        return await job.run()


# Not a reboot in progress: the device says another job of its own ran, so that, read,
# the verdict would quote its version in the record's message.
BACK = {**INFO, "last_ota": {**STATUS, "ota_id": "other", "state": "idle"}}
PROTOCOL_ERROR = (FailureReason.DEVICE_UNREACHABLE, "DeviceProtocolError")


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (b"[" * 200_000 + b"]" * 200_000, PROTOCOL_ERROR),
        (endless(b"[" * 4096), PROTOCOL_ERROR),
        (dumped(BACK).replace(b'"uptime_s": 12', b'"uptime_s": ' + b"9" * 400), PROTOCOL_ERROR),
        (dumped({**BACK, "version": "\ud800"}), PROTOCOL_ERROR),
        (dumped(BACK)[:-1] + b', "version": "2.0.0"}', PROTOCOL_ERROR),
        (endless(b" ", pause_s=0.05), (FailureReason.NOT_BACK, None)),
    ],
    ids=["deep-400KB", "endless", "huge-uptime", "lone-surrogate", "duplicate-key", "dripping"],
)
async def test_a_job_resumed_at_rebooting_ends_whatever_the_device_answers(
    stub: StubDevice,
    session: aiohttp.ClientSession,
    answer: bytes | Handler,
    outcome: tuple[FailureReason, str | None],
) -> None:
    """However the device answers GET /info, the job ends failed with a defined reason,
    within its bounds, and its record can be stored."""
    if isinstance(answer, bytes):
        stub.answer("/info", answer)
    else:
        stub.routes["/api/v1/info"] = answer
    stored: list[UpdateJobRecord] = []
    final = await run_job(client_of(stub, session, timeout=1.0), stored.append)
    assert (final.step, final.reason, final.error) == (UpdateStep.FAILED, *outcome)
    assert stored[-1] == final
    storable(final)


async def test_an_unexpected_error_ends_the_job(
    stub: StubDevice,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The last resort: an exception the client should never raise still ends the job,
    failed with its type, its traceback logged once. on_change's own exceptions and
    cancelling still go through."""
    client = client_of(stub, session)

    async def surprise() -> DeviceInfo:
        raise RuntimeError("aiohttp met something new")

    monkeypatch.setattr(client, "info", surprise)
    caplog.set_level(logging.DEBUG, logger=update_job.__name__)
    stored: list[UpdateJobRecord] = []
    final = await run_job(client, stored.append)
    assert (final.step, final.reason, final.error) == (
        UpdateStep.FAILED,
        FailureReason.DEVICE_UNREACHABLE,
        "RuntimeError",
    )
    assert stored == [final]
    tracebacks = [record for record in caplog.records if record.exc_info]
    assert len(tracebacks) == 1
    assert "aiohttp met something new" in caplog.text

    class StoreFailedError(Exception):
        pass

    def store_fails(record: UpdateJobRecord) -> None:
        raise StoreFailedError

    with pytest.raises(StoreFailedError):  # storing the failure itself failed
        await run_job(client, store_fails)

    # A device that drips: the job waits in a request when it is cancelled.
    monkeypatch.undo()
    stub.routes["/api/v1/info"] = endless(b" ", pause_s=0.05)
    task = asyncio.create_task(run_job(client, stored.append))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_on_change_errors_propagate_as_they_are(
    stub: StubDevice, session: aiohttp.ClientSession
) -> None:
    """An on_change that raises something other than an EspOtaError (a disk full) is not
    taken for a device failure: it propagates, and the job goes no further."""
    stub.answer(
        "/info",
        {
            **INFO,
            "version": "2.0.0",
            "running_partition": "ota_0",
            "last_ota": {**STATUS, "state": "succeeded"},
        },
    )
    calls: list[UpdateJobRecord] = []

    def disk_full(record: UpdateJobRecord) -> None:
        calls.append(record)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        await run_job(client_of(stub, session), disk_full)
    assert [record.step for record in calls] == [UpdateStep.CONFIRMING]
    assert [request.path for request in stub.requests] == ["/api/v1/info"]
