"""One coordinator per feed URL, shared by every device that uses the feed.

However many devices follow a feed, it is requested once per interval, conditionally.
A failing or invalid feed keeps the last good copy: nothing turns unavailable, the failure
is logged once (and its recovery once), and a repair issue is raised after a sustained
failure, or at once for a bad signature; it clears itself when the feed recovers.

The URL may carry an access token (query) or a password: names, log lines and repair
issues show it redacted, and the repair issue's id is made from a hash of it.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator, UpdateFailed
from homeassistant.util.hass_dict import HassKey

from .const import DOMAIN
from .espota.errors import FeedError, FeedSignatureError
from .espota.feed import Feed
from .espota.feed_client import FeedClient
from .espota.feed_signing import load_public_key
from .espota.urls import redacted_url

_LOGGER = logging.getLogger(__name__)

FEED_UPDATE_INTERVAL: Final = timedelta(hours=1)
# Failures in a row before a repair issue: a feed down for three hours is not a blip.
FAILURES_BEFORE_REPAIR: Final = 3

FEED_COORDINATORS: HassKey[FeedCoordinators] = HassKey(f"{DOMAIN}_feeds")


class FeedCoordinator(DataUpdateCoordinator[Feed]):
    """Fetches one feed for every device that follows it."""

    def __init__(
        self,
        hass: HomeAssistant,
        url: str,
        public_key: Ed25519PublicKey | None,
    ) -> None:
        self.url = url
        self.shown_url = redacted_url(url)  # what names, logs and issues show
        super().__init__(
            hass,
            _LOGGER,
            config_entry=None,  # shared between entries, owned by the registry
            name=f"ESP OTA feed {self.shown_url}",  # in the coordinator's own log lines
            update_interval=FEED_UPDATE_INTERVAL,
            always_update=False,
        )
        self.client = FeedClient(async_get_clientsession(hass), url, public_key=public_key)
        self.consecutive_failures = 0
        self.last_error: str | None = None

    @property
    def repair_issue_id(self) -> str:
        """The repair issue of this feed: one per URL, named by a hash that keeps a token
        in the URL out of the issue registry."""
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        return f"feed_unavailable_{digest}"

    async def _async_update_data(self) -> Feed:
        try:
            result = await self.client.fetch()
        except FeedError as err:
            return self._failed(err)
        if self.consecutive_failures:
            _LOGGER.info(
                "Feed %s is back after %s failures", self.shown_url, self.consecutive_failures
            )
            ir.async_delete_issue(self.hass, DOMAIN, self.repair_issue_id)
        self.consecutive_failures = 0
        self.last_error = None
        if result.feed is None:  # 304: the copy we hold is still current
            assert self.data is not None
            return self.data
        return result.feed

    def _failed(self, err: FeedError) -> Feed:
        """Keep the last good feed; log once; raise a repair issue when it lasts."""
        self.consecutive_failures += 1
        self.last_error = str(err)
        if self.consecutive_failures == 1 and self.data is not None:
            # (Without a good copy the coordinator itself logs the UpdateFailed, once.)
            _LOGGER.warning("Feed %s failed, keeping the last good copy: %s", self.shown_url, err)
        if isinstance(err, FeedSignatureError) or (
            self.consecutive_failures >= FAILURES_BEFORE_REPAIR
        ):
            ir.async_create_issue(
                self.hass,
                DOMAIN,
                self.repair_issue_id,
                # Informative: the fix is the publisher's (the server, the signature) or
                # the options of every entry that follows this feed (URL and key are per
                # entry, and the coordinator is shared), so no one flow can repair it; it
                # clears itself at the next good fetch.
                is_fixable=False,
                severity=ir.IssueSeverity.ERROR,
                translation_key=(
                    "feed_bad_signature" if isinstance(err, FeedSignatureError) else "feed_failing"
                ),
                translation_placeholders={"url": self.shown_url, "error": str(err)},
            )
        if self.data is None:
            # Nothing good yet: report the failure (entities show no offer meanwhile).
            raise UpdateFailed(
                translation_domain=DOMAIN,
                translation_key="feed_failed",
                translation_placeholders={"url": self.shown_url, "error": str(err)},
            ) from err
        return self.data


class FeedCoordinators:
    """The shared feed coordinators, one per feed URL and key, each with the entries that
    use it. One per Home Assistant, made when the integration is set up (async_setup)."""

    def __init__(self, hass: HomeAssistant) -> None:
        self._hass = hass
        self.coordinators: dict[tuple[str, str | None], FeedCoordinator] = {}
        self._users: dict[tuple[str, str | None], set[str]] = {}

    async def async_acquire(
        self, entry_id: str, url: str, public_key_text: str | None
    ) -> FeedCoordinator:
        """The coordinator for this feed (and key), made and first refreshed on first use.

        Raises ValueError for a public key that is not one."""
        key = (url, public_key_text)
        coordinator = self.coordinators.get(key)
        if coordinator is None:
            public_key = load_public_key(public_key_text) if public_key_text else None
            coordinator = FeedCoordinator(self._hass, url, public_key)
            self.coordinators[key] = coordinator
            # Earlier versions named the issue by the URL itself, token and all.
            ir.async_delete_issue(self._hass, DOMAIN, f"feed_unavailable_{url}")
            await coordinator.async_refresh()
        self._users.setdefault(key, set()).add(entry_id)
        return coordinator

    @callback
    def async_release(self, entry_id: str, url: str, public_key_text: str | None) -> None:
        """Forget an entry's use of a feed; the last user shuts the coordinator down."""
        key = (url, public_key_text)
        users = self._users.get(key)
        if users is None:
            return
        users.discard(entry_id)
        if users:
            return
        del self._users[key]
        coordinator = self.coordinators.pop(key)
        ir.async_delete_issue(self._hass, DOMAIN, coordinator.repair_issue_id)
        self._hass.async_create_task(coordinator.async_shutdown(), eager_start=True)
