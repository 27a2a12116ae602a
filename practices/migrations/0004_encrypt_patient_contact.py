"""Encrypt the patient email and phone values already stored in plaintext.

Raw SQL, batched by primary key, one transaction per batch (the migration is
not atomic), so a large table is not locked for the whole run. A value that is
already a token is left alone, so the migration can be re-run after a partial
failure. Reversing decrypts the values back into plaintext.
"""

from django.db import migrations, transaction

BATCH = 500
COLUMNS = ("email", "phone")


def _convert(schema_editor, change) -> None:
    connection = schema_editor.connection
    table = connection.ops.quote_name("practices_patient")
    last = None
    while True:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            after = "WHERE id > %s" if last is not None else ""
            cursor.execute(
                f"SELECT id, email, phone FROM {table} {after} ORDER BY id LIMIT %s",
                [last, BATCH] if last is not None else [BATCH],
            )
            rows = cursor.fetchall()
            for pk, *values in rows:
                new = [change(value) for value in values]
                if new != values:
                    cursor.execute(
                        f"UPDATE {table} SET email = %s, phone = %s WHERE id = %s",
                        [*new, pk],
                    )
        if len(rows) < BATCH:
            return
        last = rows[-1][0]


def encrypt_existing(apps, schema_editor):
    from primoro_payments import crypto

    def change(value):
        if not value or crypto.is_encrypted(value):
            return value
        return crypto.encrypt(value)

    _convert(schema_editor, change)


def decrypt_existing(apps, schema_editor):
    from primoro_payments import crypto

    def change(value):
        if not value or not crypto.is_encrypted(value):
            return value
        return crypto.decrypt(value)

    _convert(schema_editor, change)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("practices", "0003_encrypted_contact_erasure_totp")]

    operations = [migrations.RunPython(encrypt_existing, decrypt_existing, elidable=False)]
