"""Overdue balances: reminders through Communication Hub on the practice's schedule, then a task."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.actors import Actor
from audit.models import AuditEvent, EventType
from integrations.models import Destination, OutboxMessage
from payments import deposits, services
from payments.models import OverdueBalance
from payments.overdue import overdue_process
from payments.tasks import process_overdue_balances

pytestmark = pytest.mark.django_db

AM = Actor.system("appointment_manager")


@pytest.fixture
def due():
    return timezone.now().replace(microsecond=0) - timedelta(minutes=5)


@pytest.fixture
def deposit(practice, site, patient, due):
    return deposits.deposit_request(
        actor=AM,
        practice=practice,
        site=site,
        patient=patient,
        appointment_id="APT-OVERDUE",
        amount="80.00",
        due_at=due,
    )


def at(due, days, hours=1):
    return due + timedelta(days=days, hours=hours)


def reminders():
    return list(
        OutboxMessage.objects.filter(event_type="payment_reminder.requested").order_by("created_at")
    )


def tasks():
    return list(OutboxMessage.objects.filter(payload__task_type="overdue_balance"))


def test_reminders_follow_the_schedule_and_a_task_follows_when_they_run_out(deposit, due, patient):
    stats = overdue_process(now=at(due, 1))
    balance = OverdueBalance.objects.get()
    assert (stats.opened, stats.reminded) == (1, 0)
    assert (balance.status, balance.payment_id, balance.due_at) == ("open", deposit.payment_id, due)

    overdue_process(now=at(due, 3))
    (first,) = reminders()
    assert first.destination == Destination.COMMUNICATION_HUB
    assert (first.payload["reminder_number"], first.payload["reminders_scheduled"]) == (1, 3)
    assert (first.payload["days_overdue"], first.payload["amount"]) == (3, "80.00")
    assert first.payload["patient_id"] == str(patient.id)
    assert first.payload["billable_target"] == {"type": "deposit", "id": str(deposit.id)}

    overdue_process(now=at(due, 3, hours=5))  # same day: nothing more
    assert len(reminders()) == 1

    overdue_process(now=at(due, 7))
    overdue_process(now=at(due, 14))
    assert [m.payload["reminder_number"] for m in reminders()] == [1, 2, 3]
    assert tasks() == []

    overdue_process(now=at(due, 14, hours=12))  # less than a day after the last reminder
    assert tasks() == []

    stats = overdue_process(now=at(due, 15, hours=2))
    assert stats.escalated == 1
    (task,) = tasks()
    assert task.destination == Destination.TASK_MANAGER
    assert (task.payload["reminders_sent"], task.payload["days_overdue"]) == (3, 15)
    balance.refresh_from_db()
    assert (balance.status, balance.reminders_sent) == ("escalated", 3)

    overdue_process(now=at(due, 40))
    assert (len(reminders()), len(tasks())) == (3, 1)
    audit = AuditEvent.objects.filter(
        event_type__in=[EventType.BALANCE_OVERDUE_REMINDED, EventType.BALANCE_OVERDUE_ESCALATED]
    ).order_by("seq")
    assert [(a.event_type, a.actor_id) for a in audit] == [
        ("balance.overdue_reminded", "overdue_reminders"),
        ("balance.overdue_reminded", "overdue_reminders"),
        ("balance.overdue_reminded", "overdue_reminders"),
        ("balance.overdue_escalated", "overdue_reminders"),
    ]


def test_a_late_run_sends_one_reminder_not_a_burst(deposit, due):
    overdue_process(now=at(due, 8))

    assert [m.payload["reminder_number"] for m in reminders()] == [2]


def test_the_practice_sets_the_schedule(deposit, due, practice):
    practice.overdue_reminder_days = "1,2"
    practice.save(update_fields=["overdue_reminder_days"])

    for day in (1, 2, 3):
        overdue_process(now=at(due, day))

    assert [m.payload["reminder_number"] for m in reminders()] == [1, 2]
    assert {m.payload["reminders_scheduled"] for m in reminders()} == {2}
    assert len(tasks()) == 1


def test_a_paid_balance_is_settled_and_reminded_no_more(deposit, due, provider_actor):
    overdue_process(now=at(due, 3))
    services.payment_capture(payment_id=deposit.payment_id, actor=provider_actor)

    stats = overdue_process(now=at(due, 7))

    assert stats.settled == 1
    assert OverdueBalance.objects.get().status == "settled"
    assert len(reminders()) == 1


def test_a_waived_deposit_is_closed_without_reminders(deposit, due, finance_actor):
    overdue_process(now=at(due, 1))
    deposits.deposit_waive(deposit_id=deposit.id, actor=finance_actor, reason="Goodwill")

    stats = overdue_process(now=at(due, 30))

    assert stats.closed == 1
    assert OverdueBalance.objects.get().status == "closed"
    assert (reminders(), tasks()) == ([], [])


def test_a_payment_not_yet_due_is_left_alone(practice, site, patient):
    deposits.deposit_request(
        actor=AM,
        practice=practice,
        site=site,
        patient=patient,
        appointment_id="APT-LATER",
        amount="80.00",
        due_at=timezone.now() + timedelta(days=10),
    )

    stats = overdue_process()

    assert stats.opened == 0
    assert not OverdueBalance.objects.exists()


def test_two_passes_at_the_same_moment_send_each_reminder_once(deposit, due):
    overdue_process(now=at(due, 3))
    overdue_process(now=at(due, 3))

    assert len(reminders()) == 1


# --- the practice setting ---------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["3, 7", "7,3", "0,3", "", "3,3", "1,2,3,4,5,6,7,8,9,10,11", "400"]
)
def test_the_schedule_setting_is_validated(practice, value):
    practice.overdue_reminder_days = value

    with pytest.raises(ValidationError):
        practice.full_clean()


def test_the_database_refuses_a_malformed_schedule(practice):
    practice.overdue_reminder_days = "soon"

    with pytest.raises(IntegrityError), transaction.atomic():
        practice.save(update_fields=["overdue_reminder_days"])


def test_a_valid_schedule_passes(practice):
    practice.overdue_reminder_days = "2,5,10,30"
    practice.full_clean()

    assert practice.reminder_days() == [2, 5, 10, 30]


# --- how it runs ------------------------------------------------------------------------


def test_the_management_command_runs_a_pass_at_a_given_time(deposit, due):
    out = io.StringIO()

    call_command("process_overdue_balances", "--now", at(due, 3).isoformat(), stdout=out)

    assert json.loads(out.getvalue())["reminded"] == 1
    assert len(reminders()) == 1


def test_beat_runs_the_task_hourly(deposit):
    entry = next(
        e
        for e in settings.CELERY_BEAT_SCHEDULE.values()
        if e["task"] == "payments.tasks.process_overdue_balances"
    )
    assert entry["schedule"] == 3600.0

    result = process_overdue_balances.delay().get()

    assert set(result) == {
        "instalments_started",
        "opened",
        "reminded",
        "escalated",
        "settled",
        "closed",
    }
