"""Sealing credentials at rest (cluster kubeconfigs, applications' secret values).

A sealed value is `sealed:v2:<key id>:<base64url(nonce + AES-256-GCM ciphertext)>`, and its
associated data is the place the value belongs — kind, tenant, object and field, e.g.
`Cluster//lab1/spec.kubeconfig` — so a ciphertext copied to another object, field or tenant
does not open: a caller cannot hand the server a ciphertext from a backup or from another
object and have it decrypted into something the caller can read.

Keys: by default a file of 32 random bytes made once beside the database, readable only by its
owner; or WHARF_SECRET_KEY, a passphrase stretched with scrypt. Previous keys
(WHARF_PREVIOUS_SECRET_KEYS) are held for reading only, while `wharf secrets rotate` re-seals
every value under the current key.

Values sealed by earlier versions (`fernet:`, a Fernet key that was the SHA-256 of the
passphrase, bound to nothing) are read from storage only, never accepted from a caller, and
re-sealed by the rotation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "sealed:v2:"
LEGACY_PREFIX = "fernet:"
_SCRYPT_SALT = b"wharf sealing key v2"  # stretches passphrases; key files need no stretching


class SealError(ValueError):
    """A value that does not open here: another place's, another key's, or damaged."""


@dataclass(frozen=True)
class SealingKey:
    key: bytes
    legacy: str  # what the key came from, as earlier versions hashed it (reads `fernet:` values)

    @property
    def id(self) -> str:
        return hashlib.sha256(b"wharf key id\0" + self.key).hexdigest()[:12]

    @classmethod
    def from_passphrase(cls, passphrase: str) -> SealingKey:
        key = hashlib.scrypt(
            passphrase.encode(), salt=_SCRYPT_SALT, n=2**15, r=8, p=1, maxmem=64 << 20, dklen=32
        )
        return cls(key, passphrase)

    @classmethod
    def from_file(cls, path: Path) -> SealingKey:
        """32 random bytes, base64url (what `create_file` writes); anything else in the file
        is taken as a passphrase."""
        text = path.read_text().strip()
        try:
            key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            key = b""
        return cls(key, text) if len(key) == 32 else cls.from_passphrase(text)

    @staticmethod
    def create_file(path: Path) -> Path:
        """A new key file of 32 random bytes, readable only by its owner; never overwritten."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        return path

    @classmethod
    def from_setting(cls, entry: str) -> SealingKey:
        """`file:<path>` or a passphrase (an entry of WHARF_PREVIOUS_SECRET_KEYS)."""
        if entry.startswith("file:"):
            return cls.from_file(Path(entry[len("file:") :]).expanduser())
        return cls.from_passphrase(entry)


def place(kind: str, tenant: str, name: str, field: str) -> str:
    """Where a sealed value belongs: its associated data."""
    return f"{kind}/{tenant}/{name}/{field}"


class SecretBox:
    def __init__(self, current: SealingKey, previous: Sequence[SealingKey] = ()) -> None:
        self.current = current
        self._keys = {k.id: k for k in (*previous, current)}

    @staticmethod
    def is_sealed(value: str) -> bool:
        return value.startswith((PREFIX, LEGACY_PREFIX))

    def seal(self, plaintext: str, where: str) -> str:
        nonce = os.urandom(12)
        sealed = AESGCM(self.current.key).encrypt(nonce, plaintext.encode(), where.encode())
        body = base64.urlsafe_b64encode(nonce + sealed).decode()
        return f"{PREFIX}{self.current.id}:{body}"

    def open(self, sealed: str, where: str) -> str:
        """A value sealed for this place by a key this server holds; SealError otherwise."""
        if not sealed.startswith(PREFIX):
            raise SealError("not a value sealed by this version of Wharf")
        key_id, _, body = sealed[len(PREFIX) :].partition(":")
        key = self._keys.get(key_id)
        if key is None:
            raise SealError("sealed with a key this server does not hold")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            plain = AESGCM(key.key).decrypt(raw[:12], raw[12:], where.encode())
        except (InvalidTag, binascii.Error, ValueError):
            raise SealError("sealed for another object or field, or damaged") from None
        return plain.decode()

    def open_stored(self, sealed: str, where: str) -> str:
        """`open`, and also the unbound values earlier versions stored (never a caller's)."""
        if not sealed.startswith(LEGACY_PREFIX):
            return self.open(sealed, where)
        token = sealed[len(LEGACY_PREFIX) :].encode()
        for key in self._keys.values():
            legacy = base64.urlsafe_b64encode(hashlib.sha256(key.legacy.encode()).digest())
            try:
                return Fernet(legacy).decrypt(token).decode()
            except InvalidToken:
                continue
        raise SealError("sealed by an earlier version with a key this server does not hold")

    def needs_reseal(self, sealed: str) -> bool:
        return not sealed.startswith(f"{PREFIX}{self.current.id}:")

    def derive(self, purpose: str) -> bytes:
        """32 bytes for one purpose (a robot's secret, a signing key), from the current key:
        every replica derives the same, and nothing needs storing."""
        return hmac.new(self.current.key, b"wharf derive\0" + purpose.encode(), "sha256").digest()

    def derive_all(self, purpose: str) -> list[bytes]:
        """`derive` under the current key and each previous one (current first): what was
        handed out before a rotation still checks until the previous key is dropped."""
        keys = [self.current, *(k for k in self._keys.values() if k is not self.current)]
        return [
            hmac.new(k.key, b"wharf derive\0" + purpose.encode(), "sha256").digest() for k in keys
        ]


def box_for(secret_key: str | None, key_file: Path, previous: str = "") -> SecretBox:
    """The box of a server's settings: the passphrase, else the key file (made when missing);
    `previous` lists keys kept for reading (comma-separated passphrases or file:<path>)."""
    if secret_key:
        current = SealingKey.from_passphrase(secret_key)
    else:
        if not key_file.is_file():
            SealingKey.create_file(key_file)
        current = SealingKey.from_file(key_file)
    old = [SealingKey.from_setting(e.strip()) for e in previous.split(",") if e.strip()]
    return SecretBox(current, old)


def bearer_token(path: Path) -> str:
    """The token kept in `path` (a new random one, readable only by its owner, when missing):
    what Alertmanager presents to Wharf's alert receiver, read by both from the same file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()
