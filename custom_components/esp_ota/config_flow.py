"""Config flow for ESP OTA: by hand, by zeroconf, by DHCP; reauth, reconfigure, options."""

from __future__ import annotations

from typing import Any

import probatio as vol
from homeassistant.config_entries import (
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
    OptionsFlowWithReload,
)
from homeassistant.const import CONF_HOST, CONF_MAC, CONF_PORT
from homeassistant.core import callback
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.device_registry import format_mac
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectSelector,
    SelectSelectorConfig,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
from homeassistant.helpers.service_info.dhcp import DhcpServiceInfo
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo

from .const import (
    CONF_CERT_FINGERPRINT,
    CONF_CHANNEL,
    CONF_DIRECT_DOWNLOAD,
    CONF_FEED_PUBLIC_KEY,
    CONF_FEED_URL,
    CONF_MAX_PARALLEL_INSTALLS,
    CONF_REBOOT_TIMEOUT,
    CONF_SECRET,
    DEFAULT_CHANNEL,
    DEFAULT_MAX_PARALLEL_INSTALLS,
    DEFAULT_REBOOT_TIMEOUT,
    DOMAIN,
    ZEROCONF_API_VERSION,
)
from .espota.device_client import DeviceClient
from .espota.errors import (
    CertificateMismatchError,
    DeviceError,
    DeviceUnauthorizedError,
    DeviceUnreachableError,
)
from .espota.feed import Channel
from .espota.feed_signing import KeyFormatError, load_public_key
from .espota.protocol import DeviceInfo
from .helpers import parse_host

SECRET_SELECTOR = TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD))
CONNECTION_SCHEMA = vol.Schema(
    {vol.Required(CONF_HOST): str, vol.Required(CONF_SECRET): SECRET_SELECTOR}
)


class ConnectionTestError(Exception):
    """A connection test failed; `reason` is the translation key of the form error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EspOtaConfigFlow(ConfigFlow, domain=DOMAIN):
    """Add an ESP32 running the ESP OTA device API."""

    VERSION = 1

    def __init__(self) -> None:
        self._host = ""
        self._port = 0
        self._mac = ""

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> EspOtaOptionsFlow:
        """The options flow."""
        return EspOtaOptionsFlow()

    async def _connect(
        self, host: str, port: int, secret: str, pinned: str | None
    ) -> tuple[DeviceInfo, str]:
        """Read the device's certificate (or check the pinned one) and its identity."""
        client = DeviceClient(async_get_clientsession(self.hass), host, port, secret)
        try:
            fingerprint = await client.fetch_certificate_fingerprint()
            if pinned is not None and fingerprint != pinned:
                raise ConnectionTestError("cert_mismatch")
            client.cert_fingerprint = fingerprint
            info = await client.info()
        except DeviceUnreachableError as err:
            raise ConnectionTestError("cannot_connect") from err
        except DeviceUnauthorizedError as err:
            raise ConnectionTestError("invalid_auth") from err
        except CertificateMismatchError as err:  # pragma: no cover - the same TLS session
            raise ConnectionTestError("cert_mismatch") from err
        except DeviceError as err:
            raise ConnectionTestError("invalid_response") from err
        return info, fingerprint

    def _entry_data(self, info: DeviceInfo, secret: str, fingerprint: str) -> dict[str, Any]:
        return {
            CONF_HOST: self._host,
            CONF_PORT: self._port,
            CONF_SECRET: secret,
            CONF_CERT_FINGERPRINT: fingerprint,
            CONF_MAC: format_mac(info.mac),
        }

    @staticmethod
    def _title(info: DeviceInfo) -> str:
        return f"{info.project} {format_mac(info.mac)[-5:]}"

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Host[:port] and the device secret, typed by the user."""
        errors: dict[str, str] = {}
        if user_input is not None:
            try:
                self._host, self._port = parse_host(user_input[CONF_HOST])
                info, fingerprint = await self._connect(
                    self._host, self._port, user_input[CONF_SECRET], None
                )
            except ValueError:
                errors[CONF_HOST] = "invalid_host"
            except ConnectionTestError as refused:
                errors["base"] = refused.reason
            else:
                await self.async_set_unique_id(format_mac(info.mac), raise_on_progress=False)
                self._abort_if_unique_id_configured(
                    updates={CONF_HOST: self._host, CONF_PORT: self._port}
                )
                return self.async_create_entry(
                    title=self._title(info),
                    data=self._entry_data(info, user_input[CONF_SECRET], fingerprint),
                )
        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema(
                    {vol.Required(CONF_HOST): str, vol.Required(CONF_SECRET): SECRET_SELECTOR}
                ),
                user_input,
            ),
            errors=errors,
        )

    async def async_step_zeroconf(self, discovery_info: ZeroconfServiceInfo) -> ConfigFlowResult:
        """A device announced `_esp-ota._tcp.local.`."""
        properties = discovery_info.properties
        if properties.get("api") != ZEROCONF_API_VERSION or not properties.get("mac"):
            return self.async_abort(reason="unsupported_device")
        self._mac = format_mac(properties["mac"])
        self._host, self._port = discovery_info.host, discovery_info.port or 443
        await self.async_set_unique_id(self._mac)
        # A known device that moved: follow it, go no further.
        self._abort_if_unique_id_configured(updates={CONF_HOST: self._host, CONF_PORT: self._port})
        self.context["title_placeholders"] = {
            "name": f"{properties.get('project', 'ESP32')} ({self._mac[-5:]})"
        }
        return await self.async_step_zeroconf_confirm()

    async def async_step_zeroconf_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for the secret of a discovered device."""
        errors: dict[str, str] = {}
        if user_input is not None:
            try:
                info, fingerprint = await self._connect(
                    self._host, self._port, user_input[CONF_SECRET], None
                )
            except ConnectionTestError as refused:
                errors["base"] = refused.reason
            else:
                if format_mac(info.mac) != self._mac:
                    return self.async_abort(reason="wrong_device")
                return self.async_create_entry(
                    title=self._title(info),
                    data=self._entry_data(info, user_input[CONF_SECRET], fingerprint),
                )
        return self.async_show_form(
            step_id="zeroconf_confirm",
            data_schema=vol.Schema({vol.Required(CONF_SECRET): SECRET_SELECTOR}),
            description_placeholders={"host": f"{self._host}:{self._port}"},
            errors=errors,
        )

    async def async_step_dhcp(self, discovery_info: DhcpServiceInfo) -> ConfigFlowResult:
        """A registered device got a (new) address: follow it."""
        await self.async_set_unique_id(format_mac(discovery_info.macaddress))
        self._abort_if_unique_id_configured(updates={CONF_HOST: discovery_info.ip})
        # Only devices already added are matched (registered_devices): nothing to add here.
        return self.async_abort(reason="not_configured")

    async def async_step_reauth(self, entry_data: dict[str, Any]) -> ConfigFlowResult:
        """The device refused its secret."""
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for the new secret and test it against the pinned certificate."""
        entry = self._get_reauth_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            try:
                await self._connect(
                    entry.data[CONF_HOST],
                    entry.data[CONF_PORT],
                    user_input[CONF_SECRET],
                    entry.data[CONF_CERT_FINGERPRINT],
                )
            except ConnectionTestError as refused:
                errors["base"] = refused.reason
            else:
                return self.async_update_reload_and_abort(
                    entry, data_updates={CONF_SECRET: user_input[CONF_SECRET]}
                )
        return self.async_show_form(
            step_id="reauth_confirm",
            data_schema=vol.Schema({vol.Required(CONF_SECRET): SECRET_SELECTOR}),
            description_placeholders={"name": entry.title},
            errors=errors,
        )

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change address and secret; the device must still present its pinned certificate."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            try:
                self._host, self._port = parse_host(user_input[CONF_HOST])
                info, _ = await self._connect(
                    self._host,
                    self._port,
                    user_input[CONF_SECRET],
                    entry.data[CONF_CERT_FINGERPRINT],
                )
            except ValueError:
                errors[CONF_HOST] = "invalid_host"
            except ConnectionTestError as refused:
                errors["base"] = refused.reason
            else:
                await self.async_set_unique_id(format_mac(info.mac))
                self._abort_if_unique_id_mismatch(reason="wrong_device")
                return self.async_update_reload_and_abort(
                    entry,
                    data_updates={
                        CONF_HOST: self._host,
                        CONF_PORT: self._port,
                        CONF_SECRET: user_input[CONF_SECRET],
                    },
                )
        current = {CONF_HOST: f"{entry.data[CONF_HOST]}:{entry.data[CONF_PORT]}"}
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema(
                    {vol.Required(CONF_HOST): str, vol.Required(CONF_SECRET): SECRET_SELECTOR}
                ),
                user_input or current,
            ),
            errors=errors,
        )


class EspOtaOptionsFlow(OptionsFlowWithReload):
    """Feed, signing key, channel and reboot time."""

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """One form for every option."""
        errors: dict[str, str] = {}
        if user_input is not None:
            feed_url = (user_input.get(CONF_FEED_URL) or "").strip()
            key_text = (user_input.get(CONF_FEED_PUBLIC_KEY) or "").strip()
            if feed_url and not feed_url.startswith(("http://", "https://")):
                errors[CONF_FEED_URL] = "invalid_feed_url"
            if key_text:
                try:
                    load_public_key(key_text)
                except KeyFormatError:
                    errors[CONF_FEED_PUBLIC_KEY] = "invalid_public_key"
            if key_text and not feed_url:
                errors[CONF_FEED_URL] = "feed_url_required"
            if not errors:
                return self.async_create_entry(
                    data={
                        CONF_FEED_URL: feed_url,
                        CONF_FEED_PUBLIC_KEY: key_text,
                        CONF_CHANNEL: user_input[CONF_CHANNEL],
                        CONF_REBOOT_TIMEOUT: int(user_input[CONF_REBOOT_TIMEOUT]),
                        CONF_DIRECT_DOWNLOAD: bool(user_input.get(CONF_DIRECT_DOWNLOAD, False)),
                        CONF_MAX_PARALLEL_INSTALLS: int(
                            user_input.get(
                                CONF_MAX_PARALLEL_INSTALLS, DEFAULT_MAX_PARALLEL_INSTALLS
                            )
                        ),
                    }
                )
        schema = vol.Schema(
            {
                vol.Optional(CONF_FEED_URL): TextSelector(
                    TextSelectorConfig(type=TextSelectorType.URL)
                ),
                vol.Optional(CONF_FEED_PUBLIC_KEY): TextSelector(),
                vol.Required(CONF_CHANNEL, default=DEFAULT_CHANNEL): SelectSelector(
                    SelectSelectorConfig(
                        options=[channel.value for channel in Channel],
                        translation_key=CONF_CHANNEL,
                    )
                ),
                vol.Required(CONF_REBOOT_TIMEOUT, default=DEFAULT_REBOOT_TIMEOUT): NumberSelector(
                    NumberSelectorConfig(
                        min=30,
                        max=3600,
                        step=1,
                        mode=NumberSelectorMode.BOX,
                        unit_of_measurement="s",
                    )
                ),
                vol.Required(CONF_DIRECT_DOWNLOAD, default=False): BooleanSelector(),
                vol.Required(
                    CONF_MAX_PARALLEL_INSTALLS, default=DEFAULT_MAX_PARALLEL_INSTALLS
                ): NumberSelector(
                    NumberSelectorConfig(min=1, max=50, step=1, mode=NumberSelectorMode.BOX)
                ),
            }
        )
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(
                schema, user_input or dict(self.config_entry.options)
            ),
            errors=errors,
        )
