"""Give the application's runtime database role what it needs, and no more.

Run as the role that owns the tables (the one `migrate` runs as), after every
`migrate`; it is idempotent. The runtime role gets SELECT, INSERT, UPDATE and
DELETE on every table and USAGE on every sequence in the schema, now and
(ALTER DEFAULT PRIVILEGES) for tables later migrations create, except:

- `audit_auditevent`: SELECT and INSERT only. With no UPDATE, DELETE or
  TRUNCATE privilege and not owning the table (so no ALTER TABLE ... DISABLE
  TRIGGER), the runtime role cannot change the audit trail even past its
  append-only triggers.
- `audit_auditchainhead`: SELECT, INSERT and UPDATE (each append moves the
  head); no DELETE or TRUNCATE.

docs/security.md ("Database roles") explains the two-role setup.
"""

from __future__ import annotations

import re
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from audit.models import AuditChainHead, AuditEvent

TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
SEQUENCE_PRIVILEGES = "USAGE, SELECT"
# Tables the runtime role may touch less than the rest; everything else is refused.
LIMITED = {
    AuditEvent: "SELECT, INSERT",
    AuditChainHead: "SELECT, INSERT, UPDATE",
}
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Command(BaseCommand):
    help = (
        "Grant the application's runtime role (not the tables' owner) what the app needs, "
        "and only SELECT/INSERT on the audit trail. Run as the owner after every migrate."
    )

    def add_arguments(self, parser):
        parser.add_argument("role", help="the runtime role the app connects as (DATABASE_URL)")
        parser.add_argument(
            "--password-file",
            help="create the role (LOGIN) if missing, and set its password from this file; "
            "needs CREATEROLE. Without it the role must exist.",
        )

    def handle(self, *args, role: str, password_file: str | None, **options):
        if not _ROLE_NAME.match(role):
            raise CommandError("The role name must be lower-case letters, digits and _.")
        password = None
        if password_file:
            password = Path(password_file).read_text().strip()
            if not password:
                raise CommandError(f"{password_file} is empty.")
        quoted = connection.ops.quote_name(role)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [role])
            found = cursor.fetchone()
            if found is None and password is None:
                raise CommandError(f"Role {role} does not exist (create it, or --password-file).")
            if found is None:
                cursor.execute(f"CREATE ROLE {quoted} LOGIN PASSWORD %s", [password])
                self.stdout.write(f"Created role {role}.")
            elif password is not None:
                cursor.execute(f"ALTER ROLE {quoted} LOGIN PASSWORD %s", [password])
            _refuse_privileged(cursor, role)
            cursor.execute("SELECT current_schema()")
            schema = connection.ops.quote_name(cursor.fetchone()[0])
            for statement in (
                f"GRANT USAGE ON SCHEMA {schema} TO {quoted}",
                f"GRANT {TABLE_PRIVILEGES} ON ALL TABLES IN SCHEMA {schema} TO {quoted}",
                f"GRANT {SEQUENCE_PRIVILEGES} ON ALL SEQUENCES IN SCHEMA {schema} TO {quoted}",
                # Tables and sequences the owner creates later (new migrations).
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
                f"GRANT {TABLE_PRIVILEGES} ON TABLES TO {quoted}",
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
                f"GRANT {SEQUENCE_PRIVILEGES} ON SEQUENCES TO {quoted}",
            ):
                cursor.execute(statement)
            for model, privileges in LIMITED.items():
                table = connection.ops.quote_name(model._meta.db_table)
                cursor.execute(f"REVOKE ALL ON {table} FROM {quoted}")
                cursor.execute(f"GRANT {privileges} ON {table} TO {quoted}")
        self.stdout.write(
            f"Role {role}: {TABLE_PRIVILEGES} on every table in {schema}, except "
            + "; ".join(f"{m._meta.db_table}: {p} only" for m, p in LIMITED.items())
            + "."
        )


def _refuse_privileged(cursor, role: str) -> None:
    """A superuser, the owner or a member of the owner's role could still switch the triggers off."""
    cursor.execute(
        "SELECT r.rolsuper, pg_has_role(r.oid, c.relowner, 'MEMBER') "
        "FROM pg_roles r, pg_class c WHERE r.rolname = %s AND c.oid = %s::regclass",
        [role, AuditEvent._meta.db_table],
    )
    superuser, owner = cursor.fetchone()
    if superuser or owner:
        raise CommandError(
            f"Role {role} is a superuser or owns the tables (or is a member of their owner): "
            "the app must run as a separate role that is neither."
        )
