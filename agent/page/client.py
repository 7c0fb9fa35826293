"""``lane-agent status``: ask the running agent's page server for its status document.

It speaks to the page on this machine as the config describes it: a wildcard listen address is
reached on loopback; with TLS the server's own certificate (``page.cert_file``) is the only one
trusted, so a self-signed certificate works and no other does; with a credential it is sent as
a bearer token. Only the standard library is used: the command works where the agent runs.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from agent.config import PageConfig
from agent.page.auth import read_credential

DEFAULT_TIMEOUT_S = 5.0


class PageUnreachableError(Exception):
    """The agent's page could not be reached or did not answer; the message says why."""


class PageRefusedError(Exception):
    """The page refused the credential (HTTP 401)."""


def page_url(config: PageConfig) -> str:
    """Where this machine reaches the page (a wildcard address becomes loopback)."""
    host = config.host.strip("[]")
    if host in ("0.0.0.0", ""):  # noqa: S104 - read from the config, not bound here
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if config.cert_file is not None else "http"
    return f"{scheme}://{host}:{config.port}"


def _tls_context(config: PageConfig) -> ssl.SSLContext | None:
    if config.cert_file is None:
        return None
    context = ssl.create_default_context(cafile=str(config.cert_file))
    # The page's own certificate is the trust anchor (pinned): its name need not be the
    # address used here, and it need not be a CA.
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def fetch(
    config: PageConfig, path: str, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Mapping[str, Any]:
    """GET ``path`` from the page as JSON."""
    headers = {"Accept": "application/json"}
    if config.credential_file is not None:
        headers["Authorization"] = f"Bearer {read_credential(config.credential_file)}"
    url = page_url(config) + path
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http(s) built above
    try:
        context = _tls_context(config)
    except (OSError, ssl.SSLError) as error:
        raise PageUnreachableError(f"page.cert_file {config.cert_file}: {error}") from None
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:  # noqa: S310
            body = response.read()
    except urllib.error.HTTPError as error:
        if error.code == 401:
            raise PageRefusedError(
                f"{url}: the page refused the credential in page.credential_file"
            ) from None
        raise PageUnreachableError(f"{url}: HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise PageUnreachableError(f"{url}: {error.reason}") from None
    except (TimeoutError, OSError) as error:
        raise PageUnreachableError(f"{url}: {error}") from None
    try:
        document = json.loads(body)
    except ValueError:
        raise PageUnreachableError(f"{url}: the answer is not JSON") from None
    if not isinstance(document, Mapping):
        raise PageUnreachableError(f"{url}: the answer is not a JSON object")
    return document


def _age(iso: object, now: float) -> str:
    if isinstance(iso, int | float):
        at = float(iso)
    elif isinstance(iso, str):
        try:
            at = datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return "?"
    else:
        return "never"
    return f"{max(0.0, now - at):.0f} s ago"


def _section(document: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    value = document.get(name)
    return value if isinstance(value, Mapping) else None


def summary(
    document: Mapping[str, Any],
    crossing: Mapping[str, Any] | None = None,
    *,
    now: float | None = None,
) -> list[str]:
    """The status document as a few readable lines (one per part of the lane)."""
    now = time.time() if now is None else now
    lane = _section(document, "lane") or {}
    listed = document.get("faults")
    faults: list[Any] = listed if isinstance(listed, list) else []
    lines = [
        f"lane {lane.get('port_id')}/{lane.get('lane_id')} (agent {lane.get('agent')}) "
        f"at {document.get('time')}: {len(faults) or 'no'} fault{'' if len(faults) == 1 else 's'}"
    ]

    def row(name: str, text: str) -> None:
        lines.append(f"  {name:<9} {text}")

    reader = _section(document, "reader")
    if reader is not None:
        found = reader.get("link")
        link: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        frames = reader.get("frames", link.get("frames_ok"))
        crc = reader.get("crc_errors", link.get("crc_errors"))
        parts = [
            "up" if reader.get("up") else "DOWN",
            " ".join(
                str(p)
                for p in (reader.get("family"), reader.get("controller_id"), reader.get("firmware"))
                if p
            ),
            f"{frames} frames, {crc} CRC errors",
            f"last read {_age(reader.get('last_read_at'), now)}",
        ]
        row("reader", " · ".join(p for p in parts if p))
    camera = _section(document, "camera")
    if camera is None:
        row("camera", "off")
    else:
        row(
            "camera",
            f"{camera.get('state')} · {camera.get('fps')} fps · plate read "
            f"{camera.get('last_inference_ms')} ms",
        )
    uplink = _section(document, "uplink")
    if uplink is not None:
        row(
            "uplink",
            f"{uplink.get('state')} {uplink.get('broker')} · {uplink.get('in_flight')} in flight",
        )
    outbox = _section(document, "outbox")
    if outbox is not None:
        age = outbox.get("oldest_unsent_age_s")
        row(
            "outbox",
            f"{outbox.get('depth')} waiting · oldest {'-' if age is None else f'{age:.0f} s'}"
            + (f" · {outbox.get('held_in_memory')} held" if outbox.get("held_in_memory") else ""),
        )
    cache = _section(document, "cache")
    if cache is not None:
        bundle = cache.get("bundle_version")
        row(
            "cache",
            f"{'plain import' if bundle is None else f'bundle {bundle}'} · age "
            f"{cache.get('age_s')} s{' · STALE' if cache.get('stale') else ''}",
        )
    if crossing is not None:
        current = crossing.get("crossing")
        if isinstance(current, Mapping):
            reasons = ", ".join(str(r) for r in current.get("reasons") or ()) or "-"
            row(
                "booth",
                f"{current.get('recommendation')} ({reasons}) · {len(current.get('cards') or ())} "
                f"card(s) · {current.get('phase')}",
            )
        else:
            row("booth", "empty")
    for fault in faults:
        if isinstance(fault, Mapping):
            row(
                "FAULT", f"{fault.get('code')}: {fault.get('message')} (since {fault.get('since')})"
            )
    return lines
