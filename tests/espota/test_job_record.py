"""The update job's record: frozen, its JSON form, and what from_dict refuses."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from custom_components.esp_ota.espota.errors import UpdateJobRecordError
from custom_components.esp_ota.espota.job_record import (
    RECORD_FORMAT,
    DownloadGrant,
    FailureReason,
    UpdateJobRecord,
    UpdateStep,
    new_record,
)

OLD, NEW = "1.0.0", "2.0.0"
GRANT = DownloadGrant(token="x", expires_at=1_700_000_600.5, host="192.168.1.10")


def full_record() -> UpdateJobRecord:
    record = new_record(
        mac="24:0a:c4:00:00:01", from_version=OLD, to_version=NEW, from_partition="ota_0"
    )
    return replace(
        record,
        sha256="a" * 64,
        size=4096,
        app_elf_sha256="b" * 64,
        step=UpdateStep.DOWNLOADING,
        start_sent=True,
        ota_id="abc",
        bytes_written=1024,
        started_at=record.created_at + 1.5,
        download=GRANT,
    )


def test_record_round_trips_through_json() -> None:
    record = full_record()
    data = json.loads(json.dumps(record.to_dict()))
    again = UpdateJobRecord.from_dict(data)
    assert again == record
    assert again.to_dict() == data
    assert again.download is not record.download  # a copy, not shared
    assert record.percentage == 25.0


def test_records_stored_before_the_newer_fields_still_load() -> None:
    data = full_record().to_dict()
    del data["ota_id_before"], data["started_at"]
    record = UpdateJobRecord.from_dict(data)
    assert (record.ota_id_before, record.started_at) == (None, None)


def test_a_record_is_frozen() -> None:
    record = full_record()
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.step = UpdateStep.FAILED  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.bytes_written = 2048  # type: ignore[misc]
    assert record.download is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.download.token = "y"  # type: ignore[misc]
    assert (record.step, record.bytes_written, record.download.token) == (
        UpdateStep.DOWNLOADING,
        1024,
        "x",
    )


@pytest.mark.parametrize(
    "grant",
    [GRANT, DownloadGrant(token="t" * 43, expires_at=None, host="esp-ota.local"), None],
    ids=["grant", "no-expiry", "direct"],
)
def test_the_download_grant_round_trips(grant: DownloadGrant | None) -> None:
    record = replace(full_record(), download=grant)
    data = json.loads(json.dumps(record.to_dict()))
    assert data["format"] == RECORD_FORMAT == 1
    if grant is None:
        assert data["download"] is None
    else:
        assert data["download"] == {
            "token": grant.token,
            "expires_at": grant.expires_at,
            "host": grant.host,
        }
    assert UpdateJobRecord.from_dict(data) == record


def test_the_previous_versions_downloads_still_load() -> None:
    """It stored the image source's own object: {"direct": true}, or the grant's fields."""
    data = full_record().to_dict()
    direct = UpdateJobRecord.from_dict(data | {"download": {"direct": True}})
    assert direct.download is None
    stored = {"token": "secret-token", "expires_at": 1_700_000_000.25, "host": "10.0.0.2"}
    granted = UpdateJobRecord.from_dict(data | {"download": stored})
    assert granted.download == DownloadGrant(
        token="secret-token", expires_at=1_700_000_000.25, host="10.0.0.2"
    )
    assert granted.to_dict()["download"] == stored


@pytest.mark.parametrize(
    ("download", "names"),
    [
        ({"direct": False}, "download"),
        ({"direct": 1}, "download"),
        ({"direct": True, "token": "x"}, "download"),
        ({"token": "x", "expires_at": 1.0, "host": "h", "path": "/f.bin"}, "download"),
        ({}, "download.token"),
        ({"token": "", "expires_at": 1.0, "host": "h"}, "download.token"),
        ({"token": "x", "expires_at": 1.0}, "download.host"),
        ({"token": "x", "expires_at": "soon", "host": "h"}, "download.expires_at"),
        ({"token": "x", "expires_at": -5, "host": "h"}, "download.expires_at"),
        ("direct", "download"),
    ],
)
def test_other_downloads_are_refused(download: Any, names: str) -> None:
    data = full_record().to_dict() | {"download": download}
    with pytest.raises(UpdateJobRecordError, match=rf"^{names}: "):
        UpdateJobRecord.from_dict(data)


def test_a_stored_idle_step_is_refused() -> None:
    """IDLE means no job: no record is ever in it."""
    data = full_record().to_dict() | {"step": "idle", "ota_id": None, "start_sent": False}
    with pytest.raises(UpdateJobRecordError, match=r"^step: a record is never idle"):
        UpdateJobRecord.from_dict(data)


@pytest.mark.parametrize(
    "change",
    [
        {"format": 2},
        {"job_id": ""},
        {"mac": 5},
        {"step": "dancing"},
        {"reason": "bored"},
        {"size": -1},
        {"size": True},
        {"bytes_written": 1.5},
        {"start_sent": "yes"},
        {"created_at": "now"},
        {"created_at": float("nan")},
        {"started_at": -1},
        {"sha256": "XYZ"},
        {"app_elf_sha256": "A" * 64},
        {"download": []},
        {"download": {"when": float("inf")}},
        {"download": {"bytes": {1: 2}}},
        {"step": "failed"},
        {"step": "rolled_back", "reason": "stalled"},
        {"step": "succeeded", "reason": "stalled"},
        {"reason": "stalled"},
        {"start_sent": False},
    ],
)
def test_garbage_records_are_refused(change: dict[str, Any]) -> None:
    data = full_record().to_dict() | change
    with pytest.raises(UpdateJobRecordError):
        UpdateJobRecord.from_dict(data)


def test_records_that_are_not_objects_or_miss_fields() -> None:
    with pytest.raises(UpdateJobRecordError):
        UpdateJobRecord.from_dict(["not", "a", "record"])
    data = full_record().to_dict()
    del data["to_version"]
    with pytest.raises(UpdateJobRecordError, match="to_version"):
        UpdateJobRecord.from_dict(data)
    # What JSON cannot hold is refused when writing, not turned into null or Infinity.
    record = replace(full_record(), download=replace(GRANT, expires_at=float("inf")))
    with pytest.raises(UpdateJobRecordError):
        record.to_dict()


def test_percentage_by_step() -> None:
    record = full_record()
    expected = {
        UpdateStep.QUEUED: None,
        UpdateStep.PREPARING: None,
        UpdateStep.STARTING: None,
        UpdateStep.DOWNLOADING: 25.0,
        UpdateStep.VERIFYING: 25.0,
        UpdateStep.REBOOTING: 100.0,
        UpdateStep.CONFIRMING: 100.0,
        UpdateStep.SUCCEEDED: 100.0,
        UpdateStep.FAILED: None,
        UpdateStep.ROLLED_BACK: None,
    }
    for step, percentage in expected.items():
        record = replace(record, step=step)
        assert record.percentage == percentage, step
        assert record.finished is (
            step in {UpdateStep.SUCCEEDED, UpdateStep.FAILED, UpdateStep.ROLLED_BACK}
        )
    record = replace(record, step=UpdateStep.DOWNLOADING, size=0)
    assert record.percentage is None  # size not known yet


def test_idle_is_the_first_step_and_not_finished() -> None:
    assert next(iter(UpdateStep)) is UpdateStep.IDLE
    assert not UpdateStep.IDLE.finished


def test_translation_keys_are_snake_case() -> None:
    for reason in FailureReason:
        assert reason.value == reason.name.lower()
    for step in UpdateStep:
        assert step.value == step.name.lower()


def test_new_record() -> None:
    record = new_record(
        mac="24:0a:c4:00:00:01",
        from_version=OLD,
        to_version=NEW,
        from_partition=None,
        clock=lambda: 1000.0,
    )
    assert (record.step, record.created_at, record.step_since) == (
        UpdateStep.QUEUED,
        1000.0,
        1000.0,
    )
    assert not record.start_sent
    assert record.ota_id is None
    assert len(record.job_id) == 32
    assert (
        new_record(mac="m", from_version=OLD, to_version=NEW, from_partition=None).job_id
        != record.job_id
    )


# --- hostile stored data ---------------------------------------------------------------


def nested(depth: int, *, as_object: bool = False) -> Any:
    """A value `depth` lists (or objects) deep."""
    value: Any = {} if as_object else []
    for _ in range(depth):
        value = {"k": value} if as_object else [value]
    return value


HOSTILE_VALUES = {
    "deep-list": nested(200_000),
    "deep-object": nested(200_000, as_object=True),
    "1000-deep": nested(1000),
    "integer-5000-digits": 10**4999,
    "integer-beyond-64-bits": 2**64,
    "negative-beyond-64-bits": -(2**63) - 1,
    "huge-float": 1e308,
    "long-string": "x" * 1_000_000,
    "lone-surrogate": "\ud800",
}
FIELDS = [*full_record().to_dict(), "extra"]


def storable(record: UpdateJobRecord) -> None:
    """What Home Assistant's storage needs: UTF-8 JSON, integers of 64 bits at most."""
    data = record.to_dict()
    values = [*data.values(), *(data["download"] or {}).values()]
    assert all(-(2**63) <= value < 2**63 for value in values if isinstance(value, int))
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    text.encode()
    assert UpdateJobRecord.from_dict(json.loads(text)) == record


@pytest.mark.parametrize("name", FIELDS)
@pytest.mark.parametrize("hostile", HOSTILE_VALUES.values(), ids=HOSTILE_VALUES)
def test_a_hostile_value_in_any_field(name: str, hostile: Any) -> None:
    """Deep, huge or wrong in any field (or inside the grant): an UpdateJobRecordError, or
    a record that stores again (a long message is one), never another exception."""
    for data in (
        full_record().to_dict() | {name: hostile},
        full_record().to_dict() | {"download": GRANT.to_dict() | {name: hostile}},
        hostile,
    ):
        try:
            record = UpdateJobRecord.from_dict(data)
        except UpdateJobRecordError:
            continue
        storable(record)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"format": nested(200_000)}, "^format: expected 1, got a list$"),
        ({"format": 10**4999}, r"^format: expected 1, got an integer of \d+ bits$"),
        ({"download": {10**4999: 1}}, r"^download: .*\(fields an integer of \d+ bits\)$"),
        ({"download": {"x" * 10_000: 1}}, r"^download: .*'x{60}'\.\.\.\)$"),
        ({"size": 2**64}, "^size: out of range"),
        ({"bytes_written": 10**30}, "^bytes_written: out of range"),
        ({"created_at": 10**400}, "^created_at: out of range"),
        ({"mac": "\udc00"}, "^mac: not Unicode text"),
        ({"step": "x" * 10_000}, r"^step: unknown value 'x{60}'\.\.\.$"),
    ],
    ids=[
        "deep-format",
        "huge-format",
        "huge-grant-key",
        "long-grant-key",
        "size-beyond-64-bits",
        "bytes-beyond-64-bits",
        "time-beyond-64-bits",
        "lone-surrogate",
        "long-step",
    ],
)
def test_hostile_values_are_named_briefly(change: dict[str, Any], match: str) -> None:
    """The error names the field and shows a hostile value in a few words: never its repr
    (a deep list recurses, an integer of 5000 digits raises), never a megabyte of it."""
    with pytest.raises(UpdateJobRecordError, match=match):
        UpdateJobRecord.from_dict(full_record().to_dict() | change)


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1, 10**400])
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
VALID = full_record().to_dict()
# Values a field may hold in some record, so that records get past their first field.
PLAUSIBLE = st.sampled_from(
    [None, True, False, 0, "", "a" * 64, *UpdateStep, *FailureReason, GRANT.to_dict()]
)
FIELD_VALUES = (
    PLAUSIBLE
    | st.sampled_from(list(HOSTILE_VALUES.values()))
    | JSON_VALUES
    | st.integers(1, 3000).map(nested)
    | st.integers(1, 300).map(lambda depth: nested(depth, as_object=True))
)
RECORD_LIKE = st.builds(
    lambda changes, grant, dropped: {
        name: value
        for name, value in (VALID | {"download": GRANT.to_dict() | grant} | changes).items()
        if name not in dropped
    },
    st.dictionaries(st.sampled_from(FIELDS), FIELD_VALUES, max_size=3),
    st.dictionaries(
        st.sampled_from(["token", "expires_at", "host", "direct"]), FIELD_VALUES, max_size=2
    ),
    st.sets(st.sampled_from(FIELDS), max_size=2),
)


@given(st.one_of(JSON_VALUES, RECORD_LIKE))
def test_fuzz_the_record_reader(data: Any) -> None:
    """Any JSON value, or a record with any of its fields replaced by one: a record that
    stores again, or an UpdateJobRecordError."""
    try:
        record = UpdateJobRecord.from_dict(data)
    except UpdateJobRecordError:
        return
    storable(record)
