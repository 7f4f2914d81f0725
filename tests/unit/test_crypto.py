"""Secrets at rest: round trip, binding to the row (associated data), tamper evidence, key rotation."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyledger.core.crypto import Cipher, DecryptionError, Keyring, associated_data, generate_key
from keyledger.core.errors import Invalid

K1, K2 = generate_key(), generate_key()
secrets_ = st.text(min_size=0, max_size=200)
row_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=30)


@given(secret=secrets_, row=row_ids)
def test_round_trip(secret, row):
    c = Cipher.from_config(K1)
    ad = associated_data("keys", row, "secret")
    blob = c.encrypt(secret, ad)
    assert c.decrypt(blob, ad) == secret
    if len(secret) >= 8:
        assert secret.encode() not in blob


@given(secret=secrets_, row=row_ids, other=row_ids)
def test_ciphertext_moved_to_another_row_does_not_decrypt(secret, row, other):
    if row == other:
        return
    c = Cipher.from_config(K1)
    blob = c.encrypt(secret, associated_data("keys", row, "secret"))
    with pytest.raises(DecryptionError):
        c.decrypt(blob, associated_data("keys", other, "secret"))
    with pytest.raises(DecryptionError):
        c.decrypt(blob, associated_data("connections", row, "api_key"))


@settings(max_examples=200)
@given(secret=st.text(min_size=1, max_size=64), data=st.data())
def test_any_tampering_is_detected(secret, data):
    c = Cipher.from_config(K1)
    ad = b"keys:key_1:secret"
    blob = bytearray(c.encrypt(secret, ad))
    i = data.draw(st.integers(0, len(blob) - 1), label="byte")
    flip = data.draw(st.integers(1, 255), label="xor")
    blob[i] ^= flip
    with pytest.raises(DecryptionError):
        c.decrypt(bytes(blob), ad)


def test_truncated_and_foreign_blobs_fail_cleanly():
    c = Cipher.from_config(K1)
    blob = c.encrypt("s3cret", b"ad")
    for bad in (b"", blob[:5], blob[:-1], b"\x02" + blob[1:]):
        with pytest.raises(DecryptionError):
            c.decrypt(bad, b"ad")


def test_nonce_is_fresh_each_time():
    c = Cipher.from_config(K1)
    assert c.encrypt("same", b"ad") != c.encrypt("same", b"ad")


def test_rotation_keyring_old_data_decrypts_and_reencrypts_under_new_key():
    old = Cipher.from_config(K1)
    blob = old.encrypt("dg-secret", b"keys:k:secret")
    both = Cipher.from_config(f"{K2},{K1}")
    assert both.decrypt(blob, b"keys:k:secret") == "dg-secret"
    assert both.needs_reencrypt(blob)
    new_blob = both.reencrypt(blob, b"keys:k:secret")
    assert not both.needs_reencrypt(new_blob)
    only_new = Cipher.from_config(K2)
    assert only_new.decrypt(new_blob, b"keys:k:secret") == "dg-secret"
    with pytest.raises(DecryptionError, match="not configured"):
        only_new.decrypt(blob, b"keys:k:secret")


def test_error_messages_never_contain_key_material():
    c = Cipher.from_config(K2)
    blob = Cipher.from_config(K1).encrypt("dg-secret", b"ad")
    with pytest.raises(DecryptionError) as err:
        c.decrypt(blob, b"ad")
    assert K1 not in str(err.value) and K2 not in str(err.value) and "dg-secret" not in str(err.value)


@pytest.mark.parametrize(
    "bad", ["", "   ", "not-base64!!", base64.urlsafe_b64encode(b"short").decode(), f"{K1},xyz"]
)
def test_bad_key_configuration_is_a_clear_error(bad):
    with pytest.raises(Invalid) as err:
        Keyring.parse(bad)
    if bad.strip():
        assert "xyz" not in str(err.value) and "not-base64" not in str(err.value)


def test_keyring_serializes_newest_first():
    ring = Keyring.parse(K1).with_new_primary(Keyring.parse(K2).keys[0])
    assert Keyring.parse(ring.to_config()).ids == ring.ids
    assert ring.primary_id == Keyring.parse(K2).primary_id
    assert ring.only_primary().ids == (ring.primary_id,)
