"""The cache as the lane service uses it: lookups, staleness, and signed updates when configured.

:class:`CacheChannel` is the one hook the composition root needs: it gives the lane engine the
freshness of the data (``fresh_at``), the policy with ``max_cache_age`` applied, the
``CacheInfo`` each crossing event carries, and — when ``cache.trust_file`` is set — runs the MQTT
updates subscriber (:mod:`agent.cache.updates`) that installs central's signed bundles. With
``cache.lock_in_memory`` it keeps the file in force locked in memory (:mod:`agent.cache.resident`)
and moves the lock along when a snapshot swaps in a new file or a delta grows it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from agent.cache.bundle import BundleLimits
from agent.cache.install import CacheInstaller, CacheState, CacheStateHolder, InstallerStats
from agent.cache.resident import ResidentCache
from agent.cache.store import CredentialCache
from agent.cache.trust import TrustStore
from agent.cache.updates import CacheUpdates, UpdatesStats
from agent.config import AgentConfig
from agent.mqtt import TlsFiles
from agent.wire.crossing_event import CacheInfo

logger = logging.getLogger(__name__)


class CacheChannel:
    """Freshness for the engine thread and, with a trust file, the updates subscriber."""

    def __init__(
        self,
        config: AgentConfig,
        cache: CredentialCache,
        *,
        trust_owner_uid: int | None = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Load the trust file (refusing a writable one) when configured; start nothing yet.

        With ``cache.lock_in_memory`` the cache file is locked in memory here, before the lane
        looks anything up: at 15 M records that reads ~1 GB when the file is not cached.
        """
        self._config = config
        self._clock = clock
        self.cache = cache
        self.state = CacheStateHolder(CacheState.from_meta(cache.meta()))
        self.residency = ResidentCache(enabled=config.cache.lock_in_memory)
        self.residency.follow(cache.current_file)
        self.installer: CacheInstaller | None = None
        self.updates: CacheUpdates | None = None
        cache_config = config.cache
        if cache_config.trust_file is None:
            logger.info("cache.trust_file not set: signed cache updates are off")
            return
        trust = TrustStore.load(cache_config.trust_file, required_owner_uid=trust_owner_uid)
        self.installer = CacheInstaller(
            cache_config.path,
            trust,
            port_id=config.lane.port_id,
            lane_id=config.lane.lane_id,
            limits=BundleLimits(cache_config.max_snapshot_bytes, cache_config.max_update_bytes),
            on_swap=self._switch,
            worker_nice=cache_config.install_nice,
        )
        self.updates = CacheUpdates(
            self.installer,
            cache,
            prefix=config.mqtt.topic_prefix,
            port_id=config.lane.port_id,
            lane_id=config.lane.lane_id,
            host=config.mqtt.host,
            port=config.mqtt.port,
            client_id=f"{config.mqtt_client_id}-updates",
            keepalive_s=config.mqtt.keepalive_s,
            session_expiry_s=config.mqtt.session_expiry_s,
            reconnect_min_s=config.mqtt.reconnect_min_s,
            reconnect_max_s=config.mqtt.reconnect_max_s,
            resync_interval_s=cache_config.resync_interval_s,
            on_state=self._state_changed,
            tls=self._tls_files(),
        )

    def _tls_files(self) -> TlsFiles | None:
        """Mutual TLS with the subscriber's own certificate (CN '<port>/<lane>/cache').

        A broker that ties each client id to its certificate (config/mosquitto/) lets one
        certificate hold one connection, so sharing the uplink's would make the two connections
        kick each other off; the config refuses tls without updates_cert_file when signed
        updates are on.
        """
        settings = self._config.mqtt
        if (
            settings.tls
            and settings.ca_file
            and settings.updates_cert_file
            and settings.updates_key_file
        ):
            return TlsFiles(settings.ca_file, settings.updates_cert_file, settings.updates_key_file)
        return None

    def _switch(self) -> None:
        """A snapshot swapped in a new file: lock it, then move the lookups onto it.

        Locking first means the lookups' first reads of the new file find it in memory; the old
        file is released only once no connection here reads it (closing its descriptor earlier
        would cancel SQLite's locks on it).
        """
        self.residency.follow(self.cache.path.resolve())
        self.cache.reopen()
        self.residency.release_retired()

    def _state_changed(self, state: CacheState) -> None:
        """After every install (and a technician's swap the updates thread noticed)."""
        self.state.set(state)
        self.residency.follow(self.cache.current_file)  # a delta may have grown the file
        self.residency.release_retired()  # the updates thread reopened the lookups before this

    def fresh_at(self) -> float | None:
        """When the data was last vouched for: what the engine computes the cache age from."""
        return self.state.fresh_at()

    def cache_info(self) -> CacheInfo:
        """Which data a crossing was decided with, for its event."""
        state = self.state.get()
        return CacheInfo(
            data_version=state.data_version,
            imported_at=state.imported_at,
            bundle_version=state.bundle_version,
        )

    def start(self) -> None:
        """Start the updates subscriber, if configured."""
        if self.updates is not None:
            self.updates.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the updates subscriber, if running, and release the file's lock in memory."""
        if self.updates is not None:
            self.updates.stop(timeout_s)
        self.residency.release()

    def stats(self) -> dict[str, object]:
        """For the status topic: installed state, install and refusal counters, channel state."""
        state = self.state.get()
        installer: InstallerStats | None = self.installer.stats() if self.installer else None
        updates: UpdatesStats | None = self.updates.stats() if self.updates else None
        return {
            "bundle_version": state.bundle_version,
            "revocation_serial": state.revocation_serial,
            "fresh_at": state.fresh_at,
            "max_cache_age_s": self._config.cache.max_cache_age_s,
            "installed": installer.installed if installer else {},
            "refused": installer.refused if installer else {},
            "last_refusal": installer.last_refusal if installer else None,
            "updates_connected": updates.connected if updates else False,
            "resync_requests": updates.resync_requests if updates else 0,
            "resident": self.residency.status().as_dict(),
        }

    def stale(self, now: float) -> bool:
        """Whether a crossing closing at ``now`` would get CACHE_STALE (for the status topic)."""
        limit = self._config.cache.max_cache_age_s
        fresh = self.state.fresh_at()
        return bool(limit) and (fresh is None or now - fresh > limit)

    def status(self) -> dict[str, object]:
        """The ``cache`` section of the status topic: counters, age, and whether it is stale."""
        now = self._clock()
        fresh = self.state.fresh_at()
        section = self.stats()
        section["age_s"] = None if fresh is None else round(now - fresh, 1)
        section["stale"] = self.stale(now)
        return section
