"""Secrets at rest: AES-256-GCM with associated data, a versioned ciphertext format and a keyring.

Configuration (``KEYLEDGER_SECRET_KEY`` or ``secret_key`` in ``keyledger.toml``) holds one or more
keys, **newest first**, separated by commas. Each key is 32 random bytes in URL-safe base64
(``keyledger secrets generate-key`` prints one)::

    secret_key = "NEW_KEY_BASE64,OLD_KEY_BASE64"

New secrets are always encrypted under the first key; any listed key decrypts. That is what makes
rotation safe: add a new key in front, re-encrypt everything (``keyledger secrets rotate`` does both),
then drop the old key.

Ciphertext format (bytes), version 1::

    b"\\x01" | kid_len (1 byte) | kid (ASCII) | nonce (12 bytes) | AES-GCM ciphertext+tag

``kid`` is the first 8 hex digits of SHA-256 of the key, so a ciphertext names the key that sealed it
and a missing key is reported by id, never by value. The associated data binds each ciphertext to its
row and column (see :func:`associated_data`), so a ciphertext copied to another row does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyledger.core.errors import Invalid, KeyledgerError

FORMAT_VERSION = 1
NONCE_BYTES = 12
KEY_BYTES = 32


class DecryptionError(KeyledgerError):
    """A stored secret could not be decrypted (wrong key, wrong row, or tampered data): the server's data or
    configuration is at fault, never the request."""

    http_status = 500
    title = "Stored secret unreadable"


class WrongSecretKey(DecryptionError):
    """The configured secret key is not the one the database's secrets are sealed with."""


def associated_data(table: str, row_id: str, column: str) -> bytes:
    """The associated data binding a ciphertext to one row and column, e.g. ``b"keys:key_1:secret"``."""
    return f"{table}:{row_id}:{column}".encode()


def generate_key() -> str:
    """A fresh 256-bit key in URL-safe base64 (the configuration format)."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def _decode_key(text: str, position: int) -> bytes:
    text = text.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        # Never echo the value: it is (meant to be) a secret.
        raise Invalid(
            f"secret_key entry #{position} is not {KEY_BYTES} bytes of base64 "
            "(generate one with: keyledger secrets generate-key)"
        )
    return raw


@dataclass(frozen=True)
class Keyring:
    """Keys newest first; the first encrypts, all decrypt."""

    keys: tuple[bytes, ...] = field(repr=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise Invalid("no secret key configured (run `keyledger init` or set KEYLEDGER_SECRET_KEY)")

    @classmethod
    def parse(cls, config_value: str) -> Keyring:
        entries = [e for e in config_value.split(",") if e.strip()]
        return cls(tuple(_decode_key(e, i + 1) for i, e in enumerate(entries)))

    def to_config(self) -> str:
        return ",".join(base64.urlsafe_b64encode(k).decode() for k in self.keys)

    @property
    def primary_id(self) -> str:
        return key_id(self.keys[0])

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(key_id(k) for k in self.keys)

    def with_new_primary(self, new_key: bytes) -> Keyring:
        return Keyring((new_key, *[k for k in self.keys if k != new_key]))

    def only_primary(self) -> Keyring:
        return Keyring(self.keys[:1])


class Cipher:
    """Encrypts and decrypts secrets with a :class:`Keyring`."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self._by_id = {key_id(k): AESGCM(k) for k in keyring.keys}

    @classmethod
    def from_config(cls, config_value: str) -> Cipher:
        return cls(Keyring.parse(config_value))

    def encrypt(self, plaintext: str | bytes, ad: bytes) -> bytes:
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        kid = self.keyring.primary_id.encode()
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._by_id[kid.decode()].encrypt(nonce, data, ad)
        return bytes([FORMAT_VERSION, len(kid)]) + kid + nonce + sealed

    def decrypt_bytes(self, blob: bytes, ad: bytes) -> bytes:
        kid, nonce, sealed = _split(blob)
        aead = self._by_id.get(kid)
        if aead is None:
            raise DecryptionError(
                f"secret was encrypted with key {kid}, which is not configured "
                f"(configured: {', '.join(self.keyring.ids)})"
            )
        try:
            return aead.decrypt(nonce, sealed, ad)
        except InvalidTag:
            raise DecryptionError(
                f"secret for {ad.decode(errors='replace')} does not decrypt "
                "(tampered, or moved from another row)"
            ) from None

    def decrypt(self, blob: bytes, ad: bytes) -> str:
        return self.decrypt_bytes(blob, ad).decode()

    def key_id_of(self, blob: bytes) -> str:
        return _split(blob)[0]

    def needs_reencrypt(self, blob: bytes) -> bool:
        return self.key_id_of(blob) != self.keyring.primary_id

    def reencrypt(self, blob: bytes, ad: bytes) -> bytes:
        """The same secret sealed under the primary key (with a fresh nonce)."""
        return self.encrypt(self.decrypt_bytes(blob, ad), ad)


def _split(blob: bytes) -> tuple[str, bytes, bytes]:
    blob = bytes(blob)
    if len(blob) < 2 or blob[0] != FORMAT_VERSION:
        raise DecryptionError("stored secret has an unknown format version")
    kid_len = blob[1]
    head = 2 + kid_len
    if len(blob) < head + NONCE_BYTES + 16:
        raise DecryptionError("stored secret is truncated")
    try:
        kid = blob[2:head].decode("ascii")
    except UnicodeDecodeError:
        raise DecryptionError("stored secret has a corrupt key id") from None
    return kid, blob[head : head + NONCE_BYTES], blob[head + NONCE_BYTES :]
