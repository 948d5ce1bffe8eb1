"""Repair flows: what the user can do about an install that rolled back, a device that did
not come back, and a device whose certificate changed.

The feed's issues (feed_failing, feed_bad_signature) stay informative: their fix is at the
feed's publisher or in the options of every device entry that follows the feed, which one
flow cannot do for them (feed_coordinator.py says more).
"""

from __future__ import annotations

import asyncio

import probatio as vol
from homeassistant.components.repairs import FlowType, RepairsFlow, RepairsFlowResult
from homeassistant.components.update import (
    ATTR_LATEST_VERSION,
    ATTR_VERSION,
    SERVICE_INSTALL,
    SERVICE_SKIP,
)
from homeassistant.components.update import DOMAIN as UPDATE_DOMAIN
from homeassistant.components.update.const import ATTR_SKIPPED_VERSION
from homeassistant.config_entries import SOURCE_RECONFIGURE, ConfigEntryState
from homeassistant.const import ATTR_ENTITY_ID, STATE_UNAVAILABLE, Platform
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.device_registry import format_mac

from .const import CONF_CERT_FINGERPRINT, DOMAIN
from .coordinator import CERTIFICATE_ISSUE
from .espota.errors import CertificateMismatchError, DeviceError, DeviceUnauthorizedError
from .espota.protocol import DeviceInfo, ImageState
from .helpers import client_from_data
from .installer import NOT_BACK_ISSUE, ROLLED_BACK_ISSUE
from .runtime import EspOtaConfigEntry


async def async_create_fix_flow(
    hass: HomeAssistant, issue_id: str, data: dict[str, str | int | float | None] | None
) -> RepairsFlow:
    """The flow that fixes `issue_id`, chosen by the issue's kind (its translation key)."""
    issue = ir.async_get(hass).async_get_issue(DOMAIN, issue_id)
    kind = issue.translation_key if issue is not None else None
    entry_id = str((data or {}).get("entry_id", ""))
    version = str((data or {}).get("version", ""))
    if kind == ROLLED_BACK_ISSUE:
        return RolledBackRepairFlow(entry_id, version)
    if kind == NOT_BACK_ISSUE:
        return NotBackRepairFlow(entry_id, version)
    if kind == CERTIFICATE_ISSUE:
        return CertificateRepairFlow(entry_id)
    # Only the issues above are created fixable.
    raise ValueError(f"no repair flow for {issue_id}")


class EntryRepairFlow(RepairsFlow):
    """A repair of one config entry's issue."""

    def __init__(self, entry_id: str) -> None:
        super().__init__()
        self._entry_id = entry_id

    def _entry(self) -> EspOtaConfigEntry | None:
        return self.hass.config_entries.async_get_entry(self._entry_id)

    def _placeholders(self, **more: str) -> dict[str, str]:
        """The issue's own placeholders (name, versions, host) for the flow's texts."""
        issue = ir.async_get(self.hass).async_get_issue(DOMAIN, self.issue_id)
        placeholders = dict(issue.translation_placeholders or {}) if issue else {}
        return placeholders | more

    def _entry_gone(self) -> RepairsFlowResult:
        """The device is no longer configured: nothing is left to repair, the issue goes."""
        return self.async_create_entry(data={})


class RolledBackRepairFlow(EntryRepairFlow):
    """A release rolled back: skip it on this device, or install it again."""

    def __init__(self, entry_id: str, version: str) -> None:
        super().__init__(entry_id)
        self._version = version
        self._install: asyncio.Task[None] | None = None
        self._install_error: str | None = None

    def _update_entities(self) -> list[str]:
        """The entry's update entities that have a state (a disabled one has none)."""
        registry = er.async_get(self.hass)
        return [
            registered.entity_id
            for registered in er.async_entries_for_config_entry(registry, self._entry_id)
            if registered.domain == Platform.UPDATE
            and (state := self.hass.states.get(registered.entity_id)) is not None
            and state.state != STATE_UNAVAILABLE
        ]

    def _offering(self, entity_id: str) -> bool:
        state = self.hass.states.get(entity_id)
        return state is not None and state.attributes.get(ATTR_LATEST_VERSION) == self._version

    def _skipped(self, entity_id: str) -> bool:
        state = self.hass.states.get(entity_id)
        return state is not None and state.attributes.get(ATTR_SKIPPED_VERSION) == self._version

    async def async_step_init(self, user_input: dict[str, str] | None = None) -> RepairsFlowResult:
        """Skip the release or try it again."""
        if self._entry() is None:
            return self._entry_gone()
        return self.async_show_menu(
            step_id="init",
            menu_options=["skip", "retry"],
            description_placeholders=self._placeholders(),
        )

    async def async_step_skip(self, user_input: dict[str, str] | None = None) -> RepairsFlowResult:
        """Skip the release on every update entity of the device that offers it (the update
        entity's own skip: it stops offering it, and offers the next release again)."""
        entities = [entity_id for entity_id in self._update_entities() if self._offering(entity_id)]
        to_skip = [entity_id for entity_id in entities if not self._skipped(entity_id)]
        if not entities:
            # A newer release replaced it, or the feed withdrew it: nothing offers it.
            return self.async_abort(
                reason="release_not_offered", description_placeholders=self._placeholders()
            )
        if to_skip:
            await self.hass.services.async_call(
                UPDATE_DOMAIN, SERVICE_SKIP, {ATTR_ENTITY_ID: to_skip}, blocking=True
            )
        return self.async_create_entry(data={})

    async def async_step_retry(self, user_input: dict[str, str] | None = None) -> RepairsFlowResult:
        """Install the same release again through its update entity; the dialog shows the
        install until it ends. Closed early, the install goes on (the installer shields its
        job) and its end raises or clears the issue as any install does."""
        if self._install is None:
            entities = self._update_entities()
            offering = [entity_id for entity_id in entities if self._offering(entity_id)]
            if not entities:
                return self.async_abort(
                    reason="device_unavailable", description_placeholders=self._placeholders()
                )
            self._install = self.hass.async_create_task(
                self._async_install((offering or entities)[0]), eager_start=False
            )
        if not self._install.done():
            return self.async_show_progress(
                step_id="retry",
                progress_action="installing",
                progress_task=self._install,
                description_placeholders=self._placeholders(),
            )
        return self.async_show_progress_done(
            next_step_id="retry_failed" if self._install_error is not None else "retry_done"
        )

    async def _async_install(self, entity_id: str) -> None:
        try:
            await self.hass.services.async_call(
                UPDATE_DOMAIN,
                SERVICE_INSTALL,
                {ATTR_ENTITY_ID: entity_id, ATTR_VERSION: self._version},
                blocking=True,
            )
        except HomeAssistantError as err:  # translated: why it failed, in the user's words
            self._install_error = str(err)

    async def async_step_retry_done(
        self, user_input: dict[str, str] | None = None
    ) -> RepairsFlowResult:
        """The release installed and was verified (the installer cleared the issue too)."""
        return self.async_create_entry(data={})

    async def async_step_retry_failed(
        self, user_input: dict[str, str] | None = None
    ) -> RepairsFlowResult:
        """The install failed again; the issue stays (the installer updated it if it rolled
        back again)."""
        return self.async_abort(
            reason="install_failed",
            description_placeholders=self._placeholders(error=self._install_error or ""),
        )


class NotBackRepairFlow(EntryRepairFlow):
    """A device did not come back after an update: check again whether it is back."""

    def __init__(self, entry_id: str, version: str) -> None:
        super().__init__(entry_id)
        self._version = version

    async def async_step_init(self, user_input: dict[str, str] | None = None) -> RepairsFlowResult:
        """Straight to the check."""
        return await self.async_step_check()

    async def async_step_check(self, user_input: dict[str, str] | None = None) -> RepairsFlowResult:
        """Read the device again; fixed once it runs the new release, confirmed."""
        entry = self._entry()
        if entry is None:
            return self._entry_gone()
        errors: dict[str, str] = {}
        if user_input is not None:
            if entry.state is ConfigEntryState.LOADED and entry.runtime_data.installer.in_progress:
                # The device is away on purpose now; this install ends with its own answer.
                errors["base"] = "install_running"
            elif (info := await self._async_read_device(entry)) is None:
                errors["base"] = "still_away"
            elif info.version != self._version:
                return self.async_abort(
                    reason="back_on_other_version",
                    description_placeholders=self._placeholders(running=info.version),
                )
            elif info.image_state is ImageState.PENDING_VERIFY:
                # Back on the release but never confirmed: its next restart rolls it back.
                return self.async_abort(
                    reason="back_unconfirmed", description_placeholders=self._placeholders()
                )
            else:
                return self.async_create_entry(data={})
        return self.async_show_form(
            step_id="check",
            data_schema=vol.Schema({}),
            description_placeholders=self._placeholders(),
            errors=errors,
        )

    async def _async_read_device(self, entry: EspOtaConfigEntry) -> DeviceInfo | None:
        """The device's report now, or None while it cannot be reached."""
        if entry.state is ConfigEntryState.SETUP_RETRY:
            # Home Assistant started while the device was away: set the entry up now.
            await self.hass.config_entries.async_reload(entry.entry_id)
        if entry.state is not ConfigEntryState.LOADED:
            return None
        coordinator = entry.runtime_data.device
        await coordinator.async_refresh()
        return coordinator.data.info if coordinator.last_update_success else None


class CertificateRepairFlow(EntryRepairFlow):
    """The device presents another certificate: reconfigure the address, or trust the new
    certificate after the user compared its fingerprint (never silently)."""

    def __init__(self, entry_id: str) -> None:
        super().__init__(entry_id)
        self._offered: str | None = None  # the fingerprint shown to the user

    async def async_step_init(self, user_input: dict[str, str] | None = None) -> RepairsFlowResult:
        """Reconfigure, or trust the new certificate."""
        if self._entry() is None:
            return self._entry_gone()
        return self.async_show_menu(
            step_id="init",
            menu_options=["reconfigure", "trust_certificate"],
            description_placeholders=self._placeholders(),
        )

    async def async_step_reconfigure(
        self, user_input: dict[str, str] | None = None
    ) -> RepairsFlowResult:
        """Hand over to the entry's reconfigure flow (a new address, the same certificate).
        The issue stays until the device is reached with its pinned certificate again."""
        entry = self._entry()
        if entry is None:
            return self._entry_gone()
        flow = await self.hass.config_entries.flow.async_init(
            DOMAIN, context={"source": SOURCE_RECONFIGURE, "entry_id": entry.entry_id}
        )
        return self.async_abort(
            reason="reconfigure", next_flow=(FlowType.CONFIG_FLOW, flow["flow_id"])
        )

    async def async_step_trust_certificate(
        self, user_input: dict[str, str] | None = None
    ) -> RepairsFlowResult:
        """Show the fingerprint the device presents now; on confirmation pin exactly that
        one, after the device behind it proved to be this device (its secret, its MAC)."""
        entry = self._entry()
        if entry is None:
            return self._entry_gone()
        errors: dict[str, str] = {}
        if user_input is not None and self._offered is not None:
            offered = self._offered
            # Pinned to what the user saw: any other certificate is refused before the
            # secret leaves.
            client = client_from_data(self.hass, {**entry.data, CONF_CERT_FINGERPRINT: offered})
            try:
                info = await client.info()
            except CertificateMismatchError:
                errors["base"] = "certificate_changed"  # changed again: show the new one
            except DeviceUnauthorizedError:
                errors["base"] = "invalid_auth"
            except DeviceError:
                errors["base"] = "cannot_connect"
            else:
                if format_mac(info.mac) != entry.unique_id:
                    return self.async_abort(
                        reason="wrong_device", description_placeholders=self._placeholders()
                    )
                self.hass.config_entries.async_update_entry(
                    entry, data={**entry.data, CONF_CERT_FINGERPRINT: offered}
                )
                self.hass.config_entries.async_schedule_reload(entry.entry_id)
                return self.async_create_entry(data={})
        if self._offered is None or errors.get("base") == "certificate_changed":
            try:
                self._offered = await client_from_data(
                    self.hass, dict(entry.data)
                ).fetch_certificate_fingerprint()
            except DeviceError:
                return self.async_abort(
                    reason="cannot_connect", description_placeholders=self._placeholders()
                )
            if self._offered == entry.data[CONF_CERT_FINGERPRINT]:
                # The pinned certificate is back (the address is this device's again).
                self.hass.config_entries.async_schedule_reload(entry.entry_id)
                return self.async_abort(
                    reason="certificate_pinned_again",
                    description_placeholders=self._placeholders(),
                )
        return self.async_show_form(
            step_id="trust_certificate",
            data_schema=vol.Schema({}),
            description_placeholders=self._placeholders(
                fingerprint=shown_fingerprint(self._offered)
            ),
            errors=errors,
        )


def shown_fingerprint(fingerprint: str) -> str:
    """AB:CD:…, as `openssl x509 -fingerprint -sha256` prints it, to compare by eye."""
    digits = fingerprint.replace(":", "").upper()
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))
