"""Demo data for development: a practice group, two practices, terminals, patients, staff logins.

`make run` calls this on every start, so it is idempotent: every row is found by
its natural key (names, terminal tid, PMS patient id, username) and created only
when missing. Every demo login shares one published password, so the command
refuses to run unless DEBUG is on (or --force is given).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from practices.models import Patient, PatientKind, Practice, PracticeGroup, Site, StaffProfile
from practices.roles import ADMIN_ROLES, ROLE_LABELS, Role
from terminals.models import Terminal, TerminalKind

DEMO_PASSWORD = "primoro-demo-2026"  # demo only: published in the README and printed at start-up
GROUP_NAME = "Primoro Demo Group"


@dataclass(frozen=True)
class DemoPractice:
    name: str
    sites: tuple[str, ...]
    dna_terminal_id: str
    # (PMS patient id, name, email, phone); numbers are from Ofcom's drama range.
    patients: tuple[tuple[str, str, str, str], ...]
    prospects: tuple[tuple[str, str, str], ...] = ()  # (name, email, phone)


PRACTICES = (
    DemoPractice(
        name="Riverside Dental",
        sites=("Riverside Main", "Riverside East"),
        dna_terminal_id="DEMO-ONLINE-RIVERSIDE",
        patients=(
            ("RIV-1001", "Amelia Hart", "amelia.hart@example.com", "07700 900101"),
            ("RIV-1002", "Oliver Bennett", "oliver.bennett@example.com", "07700 900102"),
            ("RIV-1003", "Priya Shah", "priya.shah@example.com", "07700 900103"),
            ("RIV-1004", "George Whitfield", "george.whitfield@example.com", "07700 900104"),
        ),
        prospects=(("Hannah Cole", "hannah.cole@example.com", "07700 900105"),),
    ),
    DemoPractice(
        name="Hilltop Dental",
        sites=("Hilltop Main",),
        dna_terminal_id="DEMO-ONLINE-HILLTOP",
        patients=(
            ("HIL-2001", "Isla Morgan", "isla.morgan@example.com", "07700 900201"),
            ("HIL-2002", "Noah Price", "noah.price@example.com", "07700 900202"),
        ),
    ),
)

# Two terminals per site, in this order; tids are numbered across all sites.
TERMINALS = (
    ("Reception countertop", TerminalKind.COUNTERTOP),
    ("Surgery handheld", TerminalKind.HANDHELD),
)


def terminal_plan() -> list[tuple[str, str, str, TerminalKind, str]]:
    """(practice, site, label, kind, tid) for every demo terminal."""
    plan = []
    for spec in PRACTICES:
        for site_name in spec.sites:
            for label, kind in TERMINALS:
                plan.append((spec.name, site_name, label, kind, f"DEMO-TID-{len(plan) + 1:04d}"))
    return plan


@dataclass(frozen=True)
class DemoLogin:
    username: str
    role: Role
    practice: str | None  # None: a group operator for the whole demo group
    sites: tuple[str, ...] = ()  # empty: every site of the practice

    @property
    def is_staff(self) -> bool:
        """Finance and compliance admins may use the Django admin."""
        return self.role in ADMIN_ROLES

    @property
    def where(self) -> str:
        if self.practice is None:
            return f"{GROUP_NAME} (every practice)"
        return f"{self.practice}: {', '.join(self.sites) if self.sites else 'all sites'}"


LOGINS = (
    DemoLogin("reception", Role.RECEPTION, "Riverside Dental", ("Riverside Main",)),
    DemoLogin("vt_operator", Role.VIRTUAL_TERMINAL_OPERATOR, "Riverside Dental"),
    DemoLogin("refund_manager", Role.REFUND_MANAGER, "Riverside Dental"),
    DemoLogin("approver", Role.REFUND_APPROVER, "Riverside Dental"),
    DemoLogin("finance_admin", Role.FINANCE_ADMIN, "Riverside Dental"),
    DemoLogin("compliance_admin", Role.COMPLIANCE_ADMIN, "Riverside Dental"),
    DemoLogin("group_operator", Role.GROUP_OPERATOR, None),
    DemoLogin("hilltop_reception", Role.RECEPTION, "Hilltop Dental"),
)


def format_logins() -> str:
    """The demo logins as a small table (also printed by `make run`)."""
    width = max(len(login.username) for login in LOGINS)
    role_width = max(len(ROLE_LABELS[login.role]) for login in LOGINS)
    lines = [f'Demo logins, all with password "{DEMO_PASSWORD}" (demo data only):']
    for login in LOGINS:
        admin = "  [Django admin]" if login.is_staff else ""
        lines.append(
            f"  {login.username:<{width}}  {ROLE_LABELS[login.role]:<{role_width}}  "
            f"{login.where}{admin}"
        )
    return "\n".join(lines)


def format_patient_token() -> str:
    """A working patient API token for the first demo patient (development key, 24 hours)."""
    from django.core.exceptions import ImproperlyConfigured

    from payments.api.tokens import mint_dev_patient_token

    spec = PRACTICES[0]
    pms_id, name = spec.patients[0][:2]
    patient = Patient.objects.filter(
        practice__group__name=GROUP_NAME, practice__name=spec.name, pms_patient_id=pms_id
    ).first()
    if patient is None:
        return ""
    try:
        token = mint_dev_patient_token(patient)
    except ImproperlyConfigured:
        return "Patient API tokens come from the identity service (PATIENT_JWT_PUBLIC_KEYS is set)."
    return f"Patient API token for {name} ({pms_id}), valid 24 h:\n  Authorization: Bearer {token}"


DEMO_MANDATE_ID = "MD-DEMO-0001"
DEMO_MANDATE_REFERENCE = "PRIMORO-DEMO-0001"


def _demo_mandate() -> None:
    """A Care Plan Direct Debit mandate for the demo patient, as GoCardless would report it.

    The simulator can then fail a payment on it: `python -m
    integrations.simulators.gocardless send payment_failed --mandate-id MD-DEMO-0001
    --mandate-ref PRIMORO-DEMO-0001`. Registered once (the service keeps an existing one).
    """
    from django.utils import timezone

    from subscriptions.services import MandateIdentity, subscription_mandate_register

    patient = Patient.objects.get(practice__group__name=GROUP_NAME, pms_patient_id="RIV-1001")
    subscription_mandate_register(
        identity=MandateIdentity(
            gocardless_mandate_id=DEMO_MANDATE_ID,
            mandate_reference=DEMO_MANDATE_REFERENCE,
            gocardless_status="active",
            practice_id=patient.practice_id,
            patient_id=patient.pk,
            module="care_plan",
        ),
        registered_at=timezone.now(),
    )


def _practices_sites_terminals(group: PracticeGroup) -> dict[str, tuple[Practice, dict]]:
    practices = {}
    for spec in PRACTICES:
        practice, _ = Practice.objects.get_or_create(
            group=group, name=spec.name, defaults={"dna_terminal_id": spec.dna_terminal_id}
        )
        sites = {}
        for site_name in spec.sites:
            sites[site_name], _ = Site.objects.get_or_create(practice=practice, name=site_name)
        for pms_id, name, email, phone in spec.patients:
            Patient.objects.get_or_create(
                practice=practice,
                pms_patient_id=pms_id,
                defaults={
                    "kind": PatientKind.PATIENT,
                    "display_name": name,
                    "email": email,
                    "phone": phone,
                },
            )
        for name, email, phone in spec.prospects:
            Patient.objects.get_or_create(  # email is encrypted, so not a lookup key
                practice=practice,
                kind=PatientKind.PROSPECT,
                display_name=name,
                defaults={"email": email, "phone": phone},
            )
        practices[spec.name] = (practice, sites)
    for practice_name, site_name, label, kind, tid in terminal_plan():
        practice, sites = practices[practice_name]
        Terminal.objects.get_or_create(
            tid=tid,
            defaults={"practice": practice, "site": sites[site_name], "label": label, "kind": kind},
        )
    return practices


def _staff(login: DemoLogin, group: PracticeGroup, practices: dict) -> User:
    first, _, last = login.username.replace("_", " ").title().partition(" ")
    user, created = User.objects.get_or_create(
        username=login.username,
        defaults={
            "first_name": first,
            "last_name": last or "Demo",
            "email": f"{login.username}@demo.primoro.example",
        },
    )
    if created or not user.check_password(DEMO_PASSWORD) or user.is_staff != login.is_staff:
        user.set_password(DEMO_PASSWORD)
        user.is_staff = login.is_staff
        user.is_active = True
        user.save()
    role_group = Group.objects.filter(name=login.role.value).first()
    if role_group is None:
        raise CommandError(f"Role group {login.role.value!r} is missing: run migrate first.")
    user.groups.set([role_group])
    if login.practice is None:
        practice, sites = None, []
    else:
        practice, practice_sites = practices[login.practice]
        sites = [practice_sites[name] for name in login.sites]
    profile, _ = StaffProfile.objects.update_or_create(
        user=user,
        defaults={
            "practice": practice,
            "practice_group": group if practice is None else None,
            "all_sites": practice is not None and not sites,
        },
    )
    profile.sites.set(sites)
    return user


class Command(BaseCommand):
    help = "Create (or top up) the demo practice group, practices, terminals, patients and logins."

    def add_arguments(self, parser):
        parser.add_argument(
            "--force",
            action="store_true",
            help="Run even though DEBUG is off (the logins share a published password).",
        )

    def handle(self, *args, force: bool = False, verbosity: int = 1, **options):
        if not settings.DEBUG and not force:
            raise CommandError(
                "load_demo creates logins with a published password; it runs only with "
                "DEBUG=true (or --force on a throwaway database)."
            )
        with transaction.atomic():
            group, _ = PracticeGroup.objects.get_or_create(name=GROUP_NAME)
            practices = _practices_sites_terminals(group)
            for login in LOGINS:
                _staff(login, group, practices)
            _demo_mandate()
        if verbosity >= 1:
            self.stdout.write(
                f"Demo data ready: {GROUP_NAME}, practices "
                f"{', '.join(spec.name for spec in PRACTICES)}."
            )
            self.stdout.write(format_logins())
            self.stdout.write(format_patient_token())
