"""Sealed values open only in their own place, with a key the server holds."""

import base64
import hashlib

import pytest
from cryptography.fernet import Fernet

from wharf.core.crypto import SealError, SealingKey, SecretBox, box_for, place

HERE = place("Application", "acme", "web", "spec.config.secrets.db.PASSWORD")
THERE = place("Application", "other", "web", "spec.config.secrets.db.PASSWORD")


def test_a_value_opens_in_its_own_place_only():
    box = SecretBox(SealingKey.from_passphrase("a passphrase"))
    sealed = box.seal("s3cret", HERE)
    assert box.open(sealed, HERE) == "s3cret"
    with pytest.raises(SealError, match="another object or field"):
        box.open(sealed, THERE)
    assert box.seal("s3cret", HERE) != sealed  # a fresh nonce every time


def test_previous_keys_read_and_the_current_one_writes(tmp_path):
    old = SealingKey.from_passphrase("old")
    new = SealingKey.from_file(SealingKey.create_file(tmp_path / "new.key"))
    sealed_old = SecretBox(old).seal("x", HERE)
    box = SecretBox(new, [old])
    assert box.open(sealed_old, HERE) == "x"
    assert box.needs_reseal(sealed_old)
    assert not box.needs_reseal(box.seal("x", HERE))
    with pytest.raises(SealError, match="does not hold"):
        SecretBox(new).open(sealed_old, HERE)
    assert (tmp_path / "new.key").stat().st_mode & 0o777 == 0o600


def test_values_of_earlier_versions_are_read_from_storage_only():
    legacy = base64.urlsafe_b64encode(hashlib.sha256(b"old-passphrase").digest())
    sealed = "fernet:" + Fernet(legacy).encrypt(b"kubeconfig").decode()
    box = SecretBox(SealingKey.from_passphrase("old-passphrase"))
    assert box.open_stored(sealed, HERE) == "kubeconfig"
    with pytest.raises(SealError):
        box.open(sealed, HERE)  # what a caller sends is never taken in the old form


def test_a_key_file_made_by_an_earlier_version_keeps_its_key(tmp_path):
    path = tmp_path / "secret.key"
    path.write_text("cVhrLWpQd2dQdUJfSmRvdThfX1BoZjRaN0F3d1dXZ0E")  # token_urlsafe(32)
    first = box_for(None, path)
    assert first.open(first.seal("x", HERE), HERE) == "x"
    assert box_for(None, path).current.id == first.current.id
