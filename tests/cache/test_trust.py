"""The trust file: who may sign, how many must, and how it is rotated."""

from __future__ import annotations

import json
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.cache.trust import (
    TrustError,
    TrustStore,
    key_id,
    sign_trust_update,
    trust_document,
    verify_trust_update,
)
from tests.cache.kit import Central


def test_trust_file_loads_keys_threshold_and_revocation(central: Central) -> None:
    trust = central.trust()
    assert trust.threshold == 2
    assert set(trust.keys) == {key_id(k.public_key()) for k in [*central.keys, central.revoked]}
    assert trust.keys[key_id(central.revoked.public_key())].revoked


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_a_trust_file_others_can_write_is_refused(central: Central, mode: int) -> None:
    os.chmod(central.trust_path, mode)
    with pytest.raises(TrustError, match="lets others write it"):
        central.trust()


def test_a_trust_file_not_owned_by_the_required_user_is_refused(central: Central) -> None:
    with pytest.raises(TrustError, match=f"must be owned by uid {os.getuid() + 1}"):
        TrustStore.load(central.trust_path, required_owner_uid=os.getuid() + 1)


def test_a_key_id_that_does_not_match_its_key_is_refused(central: Central) -> None:
    document = json.loads(central.trust_path.read_text())
    document["trust"]["keys"][0]["key_id"] = "0" * 16
    central.trust_path.write_text(json.dumps(document))
    with pytest.raises(TrustError, match="does not match its key"):
        central.trust()


def test_a_threshold_above_the_unrevoked_keys_is_refused() -> None:
    keys = [(Ed25519PrivateKey.generate().public_key(), False) for _ in range(2)]
    with pytest.raises(TrustError, match="threshold must be an integer from 1 to the 2"):
        trust_document(1, 3, keys)


def test_rotation_accepts_an_update_signed_by_threshold_keys_of_the_trust_in_force(
    central: Central,
) -> None:
    fresh = Ed25519PrivateKey.generate()
    document = trust_document(
        2,
        2,
        [
            (central.keys[1].public_key(), False),
            (central.keys[2].public_key(), False),
            (fresh.public_key(), False),
        ],
    )
    update = json.dumps(sign_trust_update(document, central.keys[:2])).encode()
    new = verify_trust_update(central.trust(), update, source="update")
    assert new.serial == 2
    assert key_id(fresh.public_key()) in new.keys
    assert key_id(central.keys[0].public_key()) not in new.keys


@pytest.mark.parametrize(
    ("signers", "serial", "message"),
    [
        ("one", 2, "1 valid signature"),
        ("outsider", 2, "unknown"),
        ("two", 1, "serial 1 is not newer than 1"),
    ],
)
def test_rotation_refuses_weak_foreign_or_replayed_updates(
    central: Central, signers: str, serial: int, message: str
) -> None:
    keys = {
        "one": central.keys[:1],
        "outsider": [central.keys[0], central.outsider],
        "two": central.keys[:2],
    }[signers]
    document = trust_document(serial, 1, [(central.outsider.public_key(), False)])
    update = json.dumps(sign_trust_update(document, keys)).encode()
    with pytest.raises(TrustError, match=message):
        verify_trust_update(central.trust(), update, source="update")
