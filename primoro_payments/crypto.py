"""Field-level encryption at rest for personal data (patient email and phone, MFA secrets).

Values are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`)
under the keys in FIELD_ENCRYPTION_KEYS: comma-separated, newest first. The
newest key encrypts; every key listed may decrypt, so a key is rotated by
putting a new one in front, running `manage.py rotate_field_encryption`, and
then dropping the old one (docs/security.md). A production key is a Fernet key
(`Fernet.generate_key()`); in development the generated `dev-...` secret from
`.local/dev-secrets.json` is stretched into one.

The column holds only the token. Tokens are randomised, so an encrypted field
cannot be searched or compared in SQL: only `isnull` lookups are allowed, and
any other lookup fails loudly instead of silently matching nothing. The empty
string is kept as it is (it says "no value", nothing personal).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django import forms
from django.conf import settings
from django.core import validators
from django.core.exceptions import ImproperlyConfigured
from django.db import models

DEV_PREFIX = "dev-"


class FieldDecryptionError(Exception):
    """A stored value could not be decrypted with any key in FIELD_ENCRYPTION_KEYS."""


def _key(raw: str, *, allow_dev: bool) -> bytes:
    if raw.startswith(DEV_PREFIX):
        if not allow_dev:
            raise ImproperlyConfigured(
                "FIELD_ENCRYPTION_KEYS holds a development key; production needs real Fernet keys."
            )
        return base64.urlsafe_b64encode(hashlib.sha256(raw.encode()).digest())
    try:
        decoded = base64.urlsafe_b64decode(raw.encode())
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != 32:
        raise ImproperlyConfigured(
            "Each FIELD_ENCRYPTION_KEYS entry must be a Fernet key "
            "(32 url-safe base64-encoded bytes, e.g. from Fernet.generate_key())."
        )
    return raw.encode()


def parse_keys(value: str, *, allow_dev: bool) -> list[bytes]:
    """The Fernet keys in a FIELD_ENCRYPTION_KEYS value, newest first; raises if unusable.

    Development keys are refused at start-up by `config.secret` when DEBUG is
    off, and by the production check (`allow_dev=False`).
    """
    keys = [
        _key(part.strip(), allow_dev=allow_dev) for part in (value or "").split(",") if part.strip()
    ]
    if not keys:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS is empty.")
    return keys


@lru_cache(maxsize=8)
def _fernets(value: str) -> tuple[MultiFernet, Fernet]:
    keys = parse_keys(value, allow_dev=True)
    return MultiFernet([Fernet(key) for key in keys]), Fernet(keys[0])


def _current() -> tuple[MultiFernet, Fernet]:
    return _fernets(getattr(settings, "FIELD_ENCRYPTION_KEYS", ""))


def encrypt(plaintext: str) -> str:
    """A token for `plaintext` under the newest key."""
    return _current()[0].encrypt(plaintext.encode()).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _current()[0].decrypt(token.encode()).decode()
    except InvalidToken:
        raise FieldDecryptionError(
            "A stored value cannot be decrypted with any key in FIELD_ENCRYPTION_KEYS "
            "(was a key removed before `manage.py rotate_field_encryption` ran?)."
        ) from None


def is_encrypted(value: str) -> bool:
    """Whether `value` is a token one of our keys can open (plaintext never is)."""
    try:
        _current()[0].decrypt(value.encode())
    except InvalidToken:
        return False
    return True


def needs_rotation(token: str) -> bool:
    """Whether `token` was made with a key other than the newest."""
    try:
        _current()[1].decrypt(token.encode())
    except InvalidToken:
        return True
    return False


def rotate(token: str) -> str:
    """The same plaintext under the newest key."""
    try:
        return _current()[0].rotate(token.encode()).decode("ascii")
    except InvalidToken:
        raise FieldDecryptionError(
            "A stored value cannot be decrypted with any key in FIELD_ENCRYPTION_KEYS."
        ) from None


class EncryptedTextField(models.TextField):
    """Text stored as a Fernet token; the model instance always holds the plaintext.

    `max_length` limits the plaintext (the column is TEXT). Only `isnull`
    lookups work, because equal plaintexts give different tokens.
    """

    @property
    def validators(self):
        extra = [validators.MaxLengthValidator(self.max_length)] if self.max_length else []
        return [*self.default_validators, *self._validators, *extra]

    def get_lookup(self, lookup_name):
        if lookup_name != "isnull":
            return None  # Django raises FieldError: unsupported lookup
        return super().get_lookup(lookup_name)

    def get_transform(self, lookup_name):
        return None

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(str(value))

    def formfield(self, **kwargs):
        # A one-line input, not a textarea: these are short values.
        defaults = {"form_class": forms.CharField, "max_length": self.max_length}
        defaults.update(kwargs)
        return super(models.TextField, self).formfield(**defaults)


class EncryptedEmailField(EncryptedTextField):
    """An email address stored encrypted; validated as an email before it is encrypted."""

    default_validators = [validators.validate_email]
    description = "Email address (encrypted)"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_length", 254)
        super().__init__(*args, **kwargs)

    def formfield(self, **kwargs):
        return super().formfield(**{"form_class": forms.EmailField, **kwargs})


# --- Key rotation ------------------------------------------------------------------


def encrypted_fields() -> list[tuple[type[models.Model], EncryptedTextField]]:
    """Every (model, field) of the project stored encrypted."""
    from django.apps import apps

    return [
        (model, field)
        for model in apps.get_models()
        for field in model._meta.concrete_fields
        if isinstance(field, EncryptedTextField)
    ]


def rotate_column(model: type[models.Model], field: EncryptedTextField, *, batch_size=500) -> int:
    """Re-encrypt one column's tokens under the newest key; returns how many changed.

    Walks the table in primary-key order, one short transaction per batch. A
    row changed meanwhile is left alone (the UPDATE matches the old token), and
    its new value is under the newest key anyway. Safe to run again.
    """
    from django.db import connection, transaction

    table = connection.ops.quote_name(model._meta.db_table)
    column = connection.ops.quote_name(field.column)
    pk = connection.ops.quote_name(model._meta.pk.column)
    changed = 0
    last = None
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            where = f"{column} <> ''" + (f" AND {pk} > %s" if last is not None else "")
            cursor.execute(
                f"SELECT {pk}, {column} FROM {table} WHERE {where} ORDER BY {pk} LIMIT %s",  # noqa: S608
                [last, batch_size] if last is not None else [batch_size],
            )
            rows = cursor.fetchall()
            for key, token in rows:
                if token is None or not needs_rotation(token):
                    continue
                cursor.execute(
                    f"UPDATE {table} SET {column} = %s WHERE {pk} = %s AND {column} = %s",  # noqa: S608
                    [rotate(token), key, token],
                )
                changed += cursor.rowcount
        if len(rows) < batch_size:
            return changed
        last = rows[-1][0]
