"""The page of one lane, as the composition root starts it from the ``[page]`` config.

Two steps, so that a config problem stops the agent before it opens anything
(``lane-agent run`` exits 78 on :class:`~agent.page.auth.PageConfigError`):

1. :func:`page_settings` reads the credential and loads the TLS files;
2. :func:`start_page` builds the feed, the metrics and the server and starts it. A port that
   cannot be bound (taken by another program) does not stop the lane: the error is logged and
   shown in the ``page`` section of the status document (``serving: false`` and why). It is no
   fault on the status topic: faults are alarms about the lane's work, which goes on, and two
   agents on one computer (a test run, central's demo) would otherwise alarm over a port.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.config import PageConfig
from agent.page.auth import CredentialCheck, read_credential, server_tls
from agent.page.feed import PageFeed, SnapshotProvider
from agent.page.metrics import build_registry
from agent.page.server import PageServer, build_app
from agent.status import StatusBoard

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PageSettings:
    """The ``[page]`` config with its files read."""

    config: PageConfig
    tls: ssl.SSLContext | None
    secret: str | None


def page_settings(config: PageConfig) -> PageSettings:
    """Read the credential and the TLS files the config names (PageConfigError if unusable)."""
    tls = None
    if config.cert_file is not None and config.key_file is not None:
        tls = server_tls(config.cert_file, config.key_file)
    secret = None if config.credential_file is None else read_credential(config.credential_file)
    return PageSettings(config, tls, secret)


@dataclass(slots=True)
class LanePage:
    """The running page: the feed the engine thread fills, and its server (None: not serving)."""

    feed: PageFeed
    server: PageServer | None
    error: str | None = None
    """Why the page is not served (the address could not be bound)."""

    def status(self) -> Mapping[str, Any]:
        """The ``page`` section of the status document."""
        counters = self.feed.counters()
        return {
            "serving": self.server is not None and self.server.running,
            "url": None if self.server is None else self.server.url,
            "error": self.error,
            "clients": self.feed.clients(),
            "dropped": counters.dropped,
            "refused_clients": counters.refused_clients,
        }

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        else:
            self.feed.close()


def start_page(
    settings: PageSettings,
    board: StatusBoard,
    *,
    snapshot: SnapshotProvider | None = None,
) -> LanePage:
    """Build the feed (status from ``board``, ``snapshot`` from the camera) and serve it."""
    config = settings.config
    feed = PageFeed(
        status=board.snapshot,
        snapshot=snapshot,
        recent_crossings=config.recent_crossings,
        client_queue=config.client_queue,
        max_clients=config.max_clients,
    )
    board.on_change(feed.status_changed)
    registry = build_registry(feed, board.snapshot)
    check = None if settings.secret is None else CredentialCheck(settings.secret)
    app = build_app(feed, registry, check=check, status_interval_s=config.status_interval_s)
    server = PageServer(app, feed, host=config.host, port=config.port, tls=settings.tls)
    try:
        server.start()
    except OSError as error:
        reason = (
            f"cannot listen on {config.host}:{config.port} ({error.strerror or error}): "
            "another program (or agent) uses the port; set page.port"
        )
        logger.error("lane page not served, the lane runs on without it: %s", reason)
        page = LanePage(feed, None, reason)
    else:
        page = LanePage(feed, server)
    board.contribute("page", page.status)
    return page
