"""Encryption at rest for credentials (cluster kubeconfigs), with Fernet.

The key comes from WHARF_SECRET_KEY (any passphrase; it is stretched with SHA-256) or, when
unset, from a key file created once beside the database, readable only by its owner.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

PREFIX = "fernet:"


class SecretBox:
    def __init__(self, passphrase: str) -> None:
        key = base64.urlsafe_b64encode(hashlib.sha256(passphrase.encode()).digest())
        self._fernet = Fernet(key)

    @classmethod
    def from_key_file(cls, path: Path) -> SecretBox:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
        return cls(path.read_text().strip())

    def seal(self, plaintext: str) -> str:
        return PREFIX + self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, sealed: str) -> str:
        if not sealed.startswith(PREFIX):
            raise ValueError("not a sealed value")
        try:
            return self._fernet.decrypt(sealed[len(PREFIX) :].encode()).decode()
        except InvalidToken as exc:
            raise ValueError("sealed with another key (is WHARF_SECRET_KEY the same?)") from exc
