"""API URLs: /api/v1/ (patient, pay-by-link, staff), the OpenAPI schema and its UI.

The schema also describes the other /api/v1/ endpoints, mounted by the root URLconf:
the inbound module triggers and the AI Guardian feed.
"""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from payments.api import patient, paylinks, staff
from payments.api.schema import SECURITY_SCHEMES

v1 = [
    path("patient/balances/", patient.BalanceListView.as_view(), name="api-balances"),
    path(
        "patient/balances/<str:balance_id>/",
        patient.BalanceDetailView.as_view(),
        name="api-balance",
    ),
    path(
        "patient/balances/<str:balance_id>/pay/",
        patient.BalancePayView.as_view(),
        name="api-balance-pay",
    ),
    path(
        "patient/payments/<str:payment_id>/",
        patient.PatientPaymentView.as_view(),
        name="api-patient-payment",
    ),
    path("patient/receipts/", patient.ReceiptListView.as_view(), name="api-receipts"),
    path(
        "patient/receipts/<str:receipt_id>/",
        patient.ReceiptDetailView.as_view(),
        name="api-receipt",
    ),
    path("links/<str:token>/", paylinks.LinkDetailView.as_view(), name="api-link"),
    path(
        "links/<str:token>/checkout/",
        paylinks.LinkCheckoutView.as_view(),
        name="api-link-checkout",
    ),
    path("links/<str:token>/reissue/", paylinks.LinkReissueView.as_view(), name="api-link-reissue"),
    path("staff/collections/", staff.CollectionView.as_view(), name="api-staff-collections"),
    path("staff/terminals/", staff.TerminalListView.as_view(), name="api-staff-terminals"),
    path(
        "staff/payments/<str:payment_id>/",
        staff.StaffPaymentView.as_view(),
        name="api-staff-payment",
    ),
    path(
        "staff/payments/<str:payment_id>/retry/",
        staff.StaffPaymentRetryView.as_view(),
        name="api-staff-payment-retry",
    ),
]

SCHEMA_SETTINGS = {
    "TITLE": "Primoro Integrated Payments API",
    "DESCRIPTION": "Patient app, one-time pay-by-link and tablet endpoints (authentication, "
    "Idempotency-Key, errors and rate limits: docs/api.md), and the signed inbound triggers "
    "of other Primoro modules and the AI Guardian's read-only feed (docs/contracts.md).",
    "VERSION": "1.0.0",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "ENUM_NAME_OVERRIDES": {
        "PaymentStateEnum": "payments.models.PaymentState",
        "TargetTypeEnum": "payments.models.TargetType",
        "PaymentMethodEnum": "payments.models.PaymentMethod",
        "LinkStatusEnum": "payments.models.PaymentLink.Status",
        "LinkChannelEnum": "payments.models.PaymentLink.Channel",
    },
    "TAGS": [
        {
            "name": "patient",
            "description": "The patient app: bearer JWT from the identity service.",
        },
        {
            "name": "pay-by-link",
            "description": "One-time payment links: the token is the credential.",
        },
        {"name": "staff", "description": "The tablet app: staff token or portal session."},
        {
            "name": "inbound",
            "description": "Events from other Primoro modules, HMAC-signed with each module's "
            "secret.",
        },
        {"name": "guardian", "description": "The AI Guardian's read-only feed, its own token."},
    ],
    "APPEND_COMPONENTS": {"securitySchemes": SECURITY_SCHEMES},
}

api = [path("api/v1/", include(v1))]
# Everything the schema describes (the root URLconf mounts the last two itself).
documented = [
    *api,
    path("api/v1/inbound/", include("integrations.inbound.urls")),
    path("api/v1/guardian/", include("integrations.guardian.urls")),
]

urlpatterns = [
    *api,
    path(
        "api/schema/",
        SpectacularAPIView.as_view(urlconf=documented, custom_settings=SCHEMA_SETTINGS),
        name="api-schema",
    ),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
