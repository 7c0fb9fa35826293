"""What a config names on disk: the checks ``config check``, ``run`` and ``doctor`` share.

A config can be valid as text and still name a trust file that is not there, TLS files that do
not match, a cache path that is a folder, or a models folder without its manifest. Those
problems depend only on the file and the files it names, so they are config problems: ``run``
refuses to start on them (exit 78, which systemd does not restart into) instead of failing
later, and ``config check`` finds them without starting anything.

They are kept out of the pydantic models on purpose: a model built in memory (tests, the demo)
must not touch the disk. :func:`check_files` is the one implementation; :func:`load_checked`
is ``load_config`` followed by it.
"""

from __future__ import annotations

import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

from agent.config.loading import ConfigError, ConfigProblem, _line_of, load_config
from agent.config.model import AgentConfig

MANIFEST_NAME = "manifest.toml"
"""The models folder's index (agent/vision/models.py reads it; duplicated here so the config
package does not import the vision adapter)."""

STATE_DIRECTORY = Path("/var/lib/lane-agent")
"""Made by systemd as the unit starts (``StateDirectory=lane-agent``, before ``ExecStartPre=``)
and by the package's tmpfiles.d: its absence before the first start is no config problem."""

ROOT_UID = 0
"""Who must own the trust file: the service refuses any other owner (agent/cache/trust.py)."""


@dataclass(frozen=True, slots=True)
class FileProblem(ConfigProblem):
    """A config problem found on disk. A warning does not stop ``run``; an error does."""

    warning: bool = False


def load_checked(
    path: Path, *, trust_owner_uid: int | None = ROOT_UID
) -> tuple[AgentConfig, list[FileProblem]]:
    """Load ``path`` and check the files it names; raise ``ConfigError`` listing every error.

    Returns the config and the warnings (problems that do not stop the lane).
    """
    config = load_config(path)
    found = check_files(config, path, trust_owner_uid=trust_owner_uid)
    errors: list[ConfigProblem] = [p for p in found if not p.warning]
    if errors:
        raise ConfigError(errors)
    return config, [p for p in found if p.warning]


def check_files(
    config: AgentConfig, source: Path, *, trust_owner_uid: int | None = ROOT_UID
) -> list[FileProblem]:
    """Every problem with the files ``config`` (read from ``source``) names, errors first.

    ``trust_owner_uid`` is the owner the trust file must have (None: any owner, for tools that
    only read it).
    """
    checker = _Checker(source)
    for key, value in (("cache.path", config.cache.path), ("outbox.path", config.outbox.path)):
        checker.database(key, value)
    if config.cache.path.resolve() == config.outbox.path.resolve():
        checker.error(
            "outbox.path",
            config.outbox.path,
            f"is the same file as cache.path; give the outbox its own file (e.g. "
            f"{config.outbox.path.parent / 'outbox.db'})",
        )
    if config.cache.trust_file is not None:
        checker.trust_file("cache.trust_file", config.cache.trust_file, trust_owner_uid)
    mqtt = config.mqtt
    if mqtt.tls and mqtt.ca_file and mqtt.cert_file and mqtt.key_file:
        checker.tls(
            "mqtt", mqtt.ca_file, ("cert_file", mqtt.cert_file), ("key_file", mqtt.key_file)
        )
        if mqtt.updates_cert_file and mqtt.updates_key_file:
            checker.tls(
                "mqtt",
                None,  # checked with the first pair
                ("updates_cert_file", mqtt.updates_cert_file),
                ("updates_key_file", mqtt.updates_key_file),
            )
    if config.vision.models_dir is not None:
        checker.models_dir("vision.models_dir", config.vision.models_dir)
    page = config.page
    if page.enabled:
        if page.cert_file is not None and page.key_file is not None:
            checker.tls("page", None, ("cert_file", page.cert_file), ("key_file", page.key_file))
        if page.credential_file is not None:
            checker.secret("page.credential_file", page.credential_file)
    return sorted(checker.found, key=lambda p: p.warning)


class _Checker:
    """Collects problems, each naming the config file, the key's line, the key and the value."""

    def __init__(self, source: Path) -> None:
        self.source = source
        try:
            self.text = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            self.text = ""
        self.found: list[FileProblem] = []

    def error(self, key: str, value: Path, message: str, *, warning: bool = False) -> None:
        line = _line_of(self.text, key.split(".")) if self.text else None
        self.found.append(FileProblem(self.source, line, key, f'"{value}"', message, warning))

    def database(self, key: str, path: Path) -> None:
        """A SQLite file the agent creates if missing: its folder must exist, it must be a file."""
        if path.is_dir():
            self.error(
                key,
                path,
                f"is a directory; name the SQLite file inside it (e.g. {path / path_hint(key)})",
            )
        elif not path.parent.is_dir() and path.parent != STATE_DIRECTORY:
            self.error(
                key,
                path,
                f"its folder {path.parent} does not exist; create it (the package's tmpfiles.d "
                "makes /var/lib/lane-agent) or name a file in an existing folder",
            )
        elif path.exists() and not path.is_file():
            self.error(key, path, "is not a regular file; name a SQLite file")

    def _readable_file(self, key: str, path: Path) -> os.stat_result | None:
        """The file's status if it is a regular file the agent can read, else a problem."""
        try:
            info = path.stat()
        except FileNotFoundError:
            self.error(key, path, "no such file; install it there or fix the path")
            return None
        except OSError as exc:
            self.error(key, path, f"cannot be read ({exc.strerror or exc})")
            return None
        if not stat.S_ISREG(info.st_mode):
            self.error(key, path, "is not a regular file; name the file itself")
            return None
        try:
            with path.open("rb") as stream:
                stream.read(1)
        except OSError as exc:
            self.error(key, path, f"cannot be read ({exc.strerror or exc}); check its permissions")
            return None
        return info

    def trust_file(self, key: str, path: Path, owner_uid: int | None) -> None:
        """The same rules the service applies when it loads the trust file."""
        info = self._readable_file(key, path)
        if info is None:
            return
        mode = stat.S_IMODE(info.st_mode)
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            self.error(
                key,
                path,
                f"mode {mode:04o} lets others write it (whoever can write it decides who is "
                "expedited); allowed: root-owned, 0644 or stricter (chmod go-w)",
            )
        if owner_uid is not None and info.st_uid != owner_uid:
            self.error(
                key,
                path,
                f"owned by uid {info.st_uid}; allowed: owned by uid {owner_uid} "
                f"(chown {owner_uid} {path})",
            )

    def tls(
        self,
        section: str,
        ca_file: Path | None,
        cert: tuple[str, Path],
        key: tuple[str, Path],
    ) -> None:
        """The CA (None: not checked here), a certificate and its key: readable, PEM, the key
        matching the certificate."""
        cert_key, cert_path = cert
        key_key, key_path = key
        ca_ok = True if ca_file is None else self._readable_file(f"{section}.ca_file", ca_file)
        cert_ok = self._readable_file(f"{section}.{cert_key}", cert_path)
        key_info = self._readable_file(f"{section}.{key_key}", key_path)
        if key_info is not None:
            mode = stat.S_IMODE(key_info.st_mode)
            if mode & (stat.S_IROTH | stat.S_IWOTH):
                self.error(
                    f"{section}.{key_key}",
                    key_path,
                    f"private key with mode {mode:04o}: every user of this computer can read "
                    "it; allowed: 0600, or 0640 with the group of the lane-agent user "
                    "(chmod o-rwx)",
                    warning=True,
                )
        if ca_ok is None or cert_ok is None or key_info is None:
            return
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if ca_file is not None:
            try:
                context.load_verify_locations(cafile=str(ca_file))
            except (ssl.SSLError, OSError) as exc:
                self.error(
                    f"{section}.ca_file",
                    ca_file,
                    f"holds no usable CA certificate ({exc}); allowed: PEM certificate(s)",
                )
        try:
            context.load_cert_chain(str(cert_path), str(key_path))
        except (ssl.SSLError, OSError) as exc:
            self.error(
                f"{section}.{cert_key}",
                cert_path,
                f'with {section}.{key_key} = "{key_path}": not a usable certificate and '
                f"matching unencrypted private key ({exc}); allowed: a PEM certificate and the "
                "PEM key it was issued for",
            )

    def secret(self, key: str, path: Path) -> None:
        """A file holding a secret: readable by the agent, not by every user."""
        info = self._readable_file(key, path)
        if info is None:
            return
        mode = stat.S_IMODE(info.st_mode)
        if mode & stat.S_IROTH:
            self.error(
                key,
                path,
                f"secret with mode {mode:04o}: every user of this computer can read it; "
                "allowed: 0600, or 0640 with the group of the lane-agent user (chmod o-rwx)",
                warning=True,
            )

    def models_dir(self, key: str, path: Path) -> None:
        if not path.is_dir():
            self.error(
                key,
                path,
                "no such folder; allowed: a folder holding manifest.toml and the ONNX models it "
                "names, or leave vision.models_dir unset for the models shipped with the agent",
            )
        elif not (path / MANIFEST_NAME).is_file():
            self.error(
                key,
                path,
                f"has no {MANIFEST_NAME}; allowed: a folder holding manifest.toml and the ONNX "
                "models it names (copy the shipped models/ folder), or unset",
            )


def path_hint(key: str) -> str:
    """The usual file name for a database key (``credentials.db``, ``outbox.db``)."""
    return "credentials.db" if key.startswith("cache") else "outbox.db"
