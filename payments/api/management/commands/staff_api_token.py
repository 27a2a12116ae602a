"""`manage.py staff_api_token <username>`: issue a tablet token; `--revoke <id>` withdraws one.

The token is printed once; only its SHA-256 is stored. Permissions are the
staff member's own roles and sites, checked on every request.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from payments.api.models import StaffApiToken
from payments.api.tokens import staff_api_token_issue, staff_api_token_revoke


class Command(BaseCommand):
    help = "Issue (or revoke) a bearer token for the tablet app."

    def add_arguments(self, parser):
        parser.add_argument("username", nargs="?")
        parser.add_argument("--label", default="", help="Which device, e.g. tablet-2.")
        parser.add_argument("--days", type=int, default=None, help="Lifetime in days.")
        parser.add_argument("--revoke", type=int, metavar="TOKEN_ID", help="Revoke this token.")

    def handle(self, *args, username=None, label="", days=None, revoke=None, **options):
        if revoke is not None:
            try:
                record = staff_api_token_revoke(token_id=revoke)
            except StaffApiToken.DoesNotExist:
                raise CommandError(f"No token {revoke}.") from None
            self.stdout.write(f"Token {record.id} revoked.")
            return
        if not username:
            raise CommandError("Give a username (or --revoke TOKEN_ID).")
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}.")
        try:
            issued = staff_api_token_issue(user=user, label=label, days=days)
        except ValueError as error:
            raise CommandError(str(error)) from None
        self.stderr.write(
            f"Token {issued.record.id} for {username}, expires {issued.record.expires_at:%Y-%m-%d}:"
        )
        self.stdout.write(issued.token)
