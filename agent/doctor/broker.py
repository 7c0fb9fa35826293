"""The broker check, step by step so the first broken step is the one named: DNS, TCP, TLS
(with the days left on both certificates), then an MQTT CONNACK.

Over plain MQTT the doctor connects under its own client id (``<client id>-doctor``) with a
clean session that expires at once. Over mutual TLS the certificate is the lane's identity and
the reference broker makes it the client id too (``use_username_as_clientid``), so any connection
with it is the lane's own: the doctor then resumes the lane's session exactly as the agent does
(same expiry, nothing acknowledged, so whatever the broker queued is redelivered to the agent), and
does not connect at all while systemd says the agent runs (it would take the connection over).
It publishes nothing: the lane's retained status topic stays the agent's.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.doctor.host import UNIT, unit_active
from agent.doctor.report import Check, fail, ok, skip, warn
from agent.mqtt import (
    TlsFiles,
    connect_keeping_session,
    new_client,
    paho_keepalive,
    refusal_hint,
    succeeded,
)

EXPIRY_WARNING_DAYS = 30
_NETWORK_FIX = (
    "check that the broker runs and listens on mqtt.port, the lane's network and any firewall "
    "between them (nc -vz HOST PORT)"
)


def check_broker(config: AgentConfig, timeout_s: float) -> list[Check]:
    mqtt = config.mqtt
    host, port = mqtt.host, mqtt.port
    addresses = _resolve(host, port, timeout_s)
    if isinstance(addresses, str):
        return [
            fail(
                "broker dns",
                f"{host}: cannot be resolved ({addresses})",
                "correct mqtt.host, or check the lane's DNS (resolvectl status, /etc/resolv.conf)",
            )
        ]
    checks = [ok("broker dns", f"{host} is {', '.join(addresses)}")]
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            peer = sock.getpeername()[0]
    except OSError as exc:
        checks.append(fail("broker tcp", f"{host}:{port}: {exc.strerror or exc}", _NETWORK_FIX))
        return checks
    checks.append(ok("broker tcp", f"{host}:{port} accepts connections ({peer})"))
    tls: TlsFiles | None = None
    if mqtt.tls and mqtt.ca_file and mqtt.cert_file and mqtt.key_file:
        tls = TlsFiles(mqtt.ca_file, mqtt.cert_file, mqtt.key_file)
        checks.append(_check_tls(host, port, tls, timeout_s))
        if checks[-1].state.value == "FAIL":
            return checks
    else:
        checks.append(skip("broker tls", "mqtt.tls = false: plain MQTT, for a lab broker only"))
    checks.append(_check_connack(config, tls, timeout_s))
    return checks


def _resolve(host: str, port: int, timeout_s: float) -> list[str] | str:
    """The addresses of ``host``, or why there are none; getaddrinfo has no timeout of its own."""
    result: list[Any] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            result.append(sorted({str(info[4][0]) for info in infos}))
        except OSError as exc:
            result.append(str(exc.strerror or exc))

    thread = threading.Thread(target=lookup, name="doctor dns", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not result:
        return f"no answer within {timeout_s:g} s"
    answer = result[0]
    return answer if isinstance(answer, str) else list(answer)


def _check_tls(host: str, port: int, tls: TlsFiles, timeout_s: float) -> Check:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=str(tls.ca_file))
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host) as sock,
        ):
            peer = sock.getpeercert() or {}
            version = sock.version()
    except ssl.SSLCertVerificationError as exc:
        return fail(
            "broker tls",
            f"{host}:{port}: the broker's certificate is not accepted ({exc.verify_message})",
            "mqtt.ca_file must hold the CA that signed the broker's certificate, and mqtt.host "
            "must be a name (or IP) the certificate lists",
        )
    except (ssl.SSLError, OSError) as exc:
        return fail(
            "broker tls",
            f"{host}:{port}: TLS handshake failed ({exc})",
            "check that mqtt.port is the broker's TLS listener and that it accepts this lane's "
            "certificate (its CA, require_certificate)",
        )
    broker_days = _days_left(ssl.cert_time_to_seconds(str(peer["notAfter"])))
    lane_days = _lane_certificate_days(tls.cert_file)
    detail = (
        f"{host}:{port}: {version}, broker certificate expires in {broker_days:.0f} days, "
        f"this lane's ({tls.cert_file.name}) in {lane_days:.0f} days"
    )
    if min(broker_days, lane_days) < EXPIRY_WARNING_DAYS:
        return warn(
            "broker tls",
            detail,
            f"renew the certificate that expires within {EXPIRY_WARNING_DAYS} days; the agent "
            "picks a renewed lane certificate up at its next reconnect",
        )
    return ok("broker tls", detail)


def _days_left(not_after: float) -> float:
    return (not_after - time.time()) / 86400.0


def _lane_certificate_days(path: Path) -> float:
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    return _days_left(certificate.not_valid_after_utc.timestamp())


def _check_connack(config: AgentConfig, tls: TlsFiles | None, timeout_s: float) -> Check:
    mqtt = config.mqtt
    if tls is not None and unit_active():
        return skip(
            "broker mqtt",
            f"{UNIT} is running and this lane's certificate is its client id: connecting would "
            "take its connection over (the TLS step above proved the broker accepts the "
            "certificate); stop the agent to test the CONNACK",
        )
    client_id = config.mqtt_client_id if tls is not None else f"{config.mqtt_client_id}-doctor"
    answered = threading.Event()
    outcome: list[Any] = []

    def on_connect(_c: Any, _u: Any, _flags: Any, reason: Any, _properties: Any) -> None:
        outcome.append(reason)
        answered.set()

    try:
        # manual_ack: a message the broker queued for the lane is never acknowledged here.
        client = new_client(client_id, tls=tls, manual_ack=True, reconnect_on_failure=False)
    except OSError as exc:
        return fail("broker mqtt", f"TLS files unusable: {exc}", "see the config check above")
    client.on_connect = on_connect
    keepalive = paho_keepalive(mqtt.keepalive_s)
    try:
        if tls is not None:  # the lane's own session: resumed, its expiry kept
            connect_keeping_session(
                client,
                mqtt.host,
                mqtt.port,
                keepalive=keepalive,
                session_expiry_s=mqtt.session_expiry_s,
            )
        else:
            client.connect(mqtt.host, mqtt.port, keepalive=keepalive, clean_start=True)
    except (OSError, ValueError) as exc:
        return fail("broker mqtt", f"{mqtt.host}:{mqtt.port}: connect failed ({exc})", _NETWORK_FIX)
    client.loop_start()
    try:
        answered.wait(timeout_s)
    finally:
        if outcome and succeeded(outcome[0]):
            client.disconnect()
        client.loop_stop()
    if not outcome:
        return fail(
            "broker mqtt",
            f"{mqtt.host}:{mqtt.port}: no CONNACK within {timeout_s:g} s",
            "the port answers but not as an MQTT v5 broker: check mqtt.port (and mqtt.tls for a "
            "TLS listener)",
        )
    reason = outcome[0]
    if not succeeded(reason):
        return fail(
            "broker mqtt",
            f"{mqtt.host}:{mqtt.port}: CONNACK refused: {reason}{refusal_hint(reason)}",
            "the broker refuses this lane: check its ACL and this lane's certificate identity "
            "(config/mosquitto/)",
        )
    return ok(
        "broker mqtt",
        f"{mqtt.host}:{mqtt.port}: CONNACK {reason} as {client_id} (MQTT v5)",
    )
