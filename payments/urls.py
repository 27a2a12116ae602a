"""Staff portal URLs (namespace `portal`)."""

from django.urls import path

from payments.portal import amendments, back_office, deposits, drawer, payment_actions, views

app_name = "portal"

urlpatterns = [
    path("", views.home, name="home"),
    path("payments/", views.payments, name="payments"),
    path("payments/<uuid:payment_id>/", views.payment_detail, name="payment"),
    path("payments/<uuid:payment_id>/status/", views.payment_status, name="payment_status"),
    path("payments/<uuid:payment_id>/refund/", views.payment_refund, name="payment_refund"),
    path("payments/<uuid:payment_id>/void/", views.payment_void, name="payment_void"),
    path("payments/<uuid:payment_id>/retry/", views.payment_retry, name="payment_retry"),
    path(
        "payments/<uuid:payment_id>/invoice-ref/",
        amendments.payment_invoice_ref,
        name="payment_invoice_ref",
    ),
    path(
        "payments/<uuid:payment_id>/receipt/",
        payment_actions.receipt_send,
        name="payment_receipt_send",
    ),
    path(
        "payments/<uuid:payment_id>/link/cancel/",
        payment_actions.link_cancel,
        name="payment_link_cancel",
    ),
    path(
        "payments/<uuid:payment_id>/link/resend/",
        payment_actions.link_resend,
        name="payment_link_resend",
    ),
    path("approvals/", views.approvals, name="approvals"),
    path("approvals/<uuid:approval_id>/decide/", views.approval_decide, name="approval_decide"),
    path("refunds/", views.refund_log, name="refund_log"),
    path("subscriptions/", back_office.subscriptions, name="subscriptions"),
    path("communications/", back_office.communications, name="communications"),
    path("exceptions/", back_office.reconciliation, name="reconciliation"),
    path("patients/", drawer.patients, name="patients"),
    path("patients/<uuid:patient_id>/pay/", drawer.drawer, name="drawer"),
    path("patients/<uuid:patient_id>/split/", drawer.split_new, name="split_new"),
    path("splits/<uuid:split_id>/", drawer.split_detail, name="split"),
    path("splits/<uuid:split_id>/cancel/", amendments.split_cancel, name="split_cancel"),
    path("splits/<uuid:split_id>/tenders/", drawer.split_tender_add, name="split_tender_add"),
    path("deposits/", deposits.deposits, name="deposits"),
    path("deposits/<uuid:deposit_id>/", deposits.deposit_detail, name="deposit"),
    path(
        "splits/<uuid:split_id>/tenders/<uuid:payment_id>/",
        drawer.split_tender_action,
        name="split_tender",
    ),
    path(
        "payments/<uuid:payment_id>/virtual-terminal/",
        drawer.virtual_terminal,
        name="virtual_terminal",
    ),
    path(
        "payments/<uuid:payment_id>/virtual-terminal/card/",
        drawer.virtual_terminal_card,
        name="virtual_terminal_card",
    ),
    path(
        "payments/<uuid:payment_id>/virtual-terminal/reopen/",
        drawer.virtual_terminal_reopen,
        name="virtual_terminal_reopen",
    ),
    path(
        "payments/<uuid:payment_id>/virtual-terminal/close/",
        drawer.virtual_terminal_close,
        name="virtual_terminal_close",
    ),
]
