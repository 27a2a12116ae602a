"""`manage.py reset_mfa <username>`: remove a staff member's authenticator (lost phone)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from practices import mfa


class Command(BaseCommand):
    help = "Remove a staff member's authenticator; they set up a new one at their next step-up."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, **options):
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError("No such user.")
        removed = mfa.mfa_reset(user=user)
        self.stdout.write(
            f"Authenticator removed for {user.get_username()}."
            if removed
            else f"{user.get_username()} had no authenticator."
        )
