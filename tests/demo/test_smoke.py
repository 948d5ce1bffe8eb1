"""What script/smoke-ha-release counts as a finding in another release's log."""

from __future__ import annotations

from demo.smoke import findings

LOG = """\
2026-12-06 08:00:26.100+00:00 WARNING (SyncWorker_0) [homeassistant.loader] We found a \
custom integration esp_ota which has not been tested by Home Assistant.
2026-12-06 08:00:26.200+00:00 WARNING (MainThread) [aiohttp_fast_zlib] zlib_ng and isal \
are not available, falling back to zlib, performance will be degraded.
2026-12-06 08:00:26.300+00:00 DEBUG (MainThread) [custom_components.esp_ota.coordinator] \
garden 00:00: polled, nothing new
2026-12-06 08:00:26.400+00:00 WARNING (MainThread) [homeassistant.helpers.frame] Detected \
that custom integration 'esp_ota' calls async_forward_entry_setup, which is deprecated
2026-12-06 08:00:26.500+00:00 ERROR (MainThread) [homeassistant.config_entries] Error \
setting up entry garden 00:00 for esp_ota
Traceback (most recent call last):
  File "/x/custom_components/esp_ota/__init__.py", line 40, in async_setup_entry
RuntimeError: boom
2026-12-06 08:00:26.600+00:00 INFO (MainThread) [homeassistant.setup] Setting up \
esp_ota, whose use of the update entity's old API is deprecated
2026-12-06 08:00:26.700+00:00 WARNING (MainThread) [custom_components.esp_ota.coordinator] \
garden 00:00 did not come back
2026-12-06 08:00:26.800+00:00 ERROR (MainThread) [homeassistant.setup] Setup failed for \
'analytics': Unable to import component: No module named 'aiohasupervisor'
"""


def test_findings_are_our_warnings_and_deprecations() -> None:
    """Our loggers at WARNING+, Home Assistant's complaints naming us (with their
    traceback), and deprecations naming us at any level; not the custom-integration notice,
    not our debug lines, not other integrations' troubles."""
    found = findings(LOG)
    assert [finding.splitlines()[0][30:80] for finding in found] == [
        "WARNING (MainThread) [homeassistant.helpers.frame]",
        "ERROR (MainThread) [homeassistant.config_entries] ",
        "INFO (MainThread) [homeassistant.setup] Setting up",
        "WARNING (MainThread) [custom_components.esp_ota.co",
    ]
    assert found[1].endswith("RuntimeError: boom")
    assert findings("") == []
