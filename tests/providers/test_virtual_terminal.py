"""The virtual terminal: MOTO checkout in DNA's embedded page, call recording muted once, unmuted once."""

from __future__ import annotations

import json

import pytest

from audit.actors import Actor
from audit.models import AuditEvent, EventType
from integrations.models import Destination, OutboxMessage
from payments import flows
from payments.models import Payment, PaymentState, TargetType
from practices.access import NotPermitted
from tests.providers.conftest import pay_on_hosted_page

pytestmark = pytest.mark.django_db(transaction=True)

S = PaymentState


def _open(actor, practice, site, patient):
    return flows.virtual_terminal_open(
        actor=actor,
        practice=practice,
        site=site,
        patient=patient,
        target_type=TargetType.INVOICE,
        target_id="INV-PHONE-1",
        amount="95.00",
    )


def _telephony(event_type=None):
    rows = OutboxMessage.objects.filter(destination=Destination.TELEPHONY)
    return rows.filter(event_type=event_type) if event_type else rows


def _session_steps(payment):
    return list(
        AuditEvent.objects.filter(
            payment_id=payment.id, event_type=EventType.VIRTUAL_TERMINAL_SESSION
        )
        .order_by("seq")
        .values_list("payload__action", flat=True)
    )


@pytest.fixture
def telephony(practice):
    practice.telephony_enabled = True
    practice.save(update_fields=["telephony_enabled"])
    return practice


def test_mute_and_unmute_exactly_once_each_when_telephony_is_enabled(
    live, http, telephony, site, patient, vt_operator
):
    session = _open(Actor.staff(vt_operator), telephony, site, patient)

    payment = session.payment
    assert payment.moto and payment.state == S.AWAITING_CUSTOMER_ACTION
    [mute] = _telephony("call_recording.mute")
    assert mute.payload["payment_id"] == str(payment.id)
    assert mute.payload["staff_id"] == str(vt_operator.pk)
    assert mute.payload["site_id"] == str(site.id)
    assert not _telephony("call_recording.unmute").exists()
    assert json.loads(session.payment_data["merchantCustomData"])["channel"] == "moto"
    assert "paymentMethods" not in session.payment_data  # card only, by phone
    [token] = [r for r in live.requests("/oauth2/token") if "payment" in r["body"]["scope"]]
    assert token["body"]["scope"] == "payment integration_embedded"

    pay_on_hosted_page(http, session.redirect_url)  # what the caller reads out, typed at DNA
    live.redeliver(1)

    payment.refresh_from_db()
    assert payment.state == S.CAPTURED
    [unmute] = _telephony("call_recording.unmute")
    assert unmute.payload["payment_id"] == str(payment.id)
    assert _telephony().count() == 2
    assert _session_steps(payment) == ["opened", "closed"]
    assert (
        flows.virtual_terminal_close(
            payment_id=payment.id, actor=Actor.staff(vt_operator), reason="completed"
        )
        is False
    )
    assert _telephony().count() == 2


def test_no_telephony_messages_when_telephony_is_disabled(
    live, http, practice, site, patient, vt_operator
):
    session = _open(Actor.staff(vt_operator), practice, site, patient)
    pay_on_hosted_page(http, session.redirect_url)

    payment = Payment.objects.get(pk=session.payment.pk)
    assert payment.state == S.CAPTURED
    assert not _telephony().exists()
    assert _session_steps(payment) == ["opened", "closed"]


def test_closing_by_hand_first_means_the_outcome_does_not_unmute_again(
    live, http, telephony, site, patient, vt_operator
):
    actor = Actor.staff(vt_operator)
    session = _open(actor, telephony, site, patient)

    closed = flows.virtual_terminal_close(
        payment_id=session.payment.id, actor=actor, reason="cancelled"
    )
    pay_on_hosted_page(http, session.redirect_url)

    assert closed is True
    assert _telephony("call_recording.unmute").count() == 1
    assert _session_steps(session.payment) == ["opened", "closed"]
    closing = AuditEvent.objects.filter(
        payment_id=session.payment.id, event_type=EventType.VIRTUAL_TERMINAL_SESSION
    ).last()
    assert closing.payload["reason"] == "cancelled" and closing.actor_kind == "staff"


def test_the_virtual_terminal_is_refused_without_the_permission(
    live, telephony, site, patient, reception_actor
):
    with pytest.raises(NotPermitted):
        _open(reception_actor, telephony, site, patient)

    assert not Payment.objects.exists()
    assert not _telephony().exists()
    assert not AuditEvent.objects.filter(event_type=EventType.VIRTUAL_TERMINAL_SESSION).exists()
    assert live.requests() == []
