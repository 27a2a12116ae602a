"""The inbound trigger endpoint in /api/schema/: path, headers and answers (docs/contracts.md)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from integrations.inbound.contracts import CONTRACTS
from integrations.inbound.models import Module
from integrations.signing import EVENT_ID_HEADER
from payments.api.schema import error

_PAIRS = ", ".join(f"{module}/{event_type}" for module, event_type in sorted(CONTRACTS))

RECEIVE = {
    "operation_id": "inbound_event",
    "summary": "An event from another Primoro module, signed with its secret",
    "description": "Each module/event_type pair is a contract with its own body, documented in "
    f"docs/contracts.md: {_PAIRS}. A repeated event id is answered with the first answer "
    "(X-Primoro-Duplicate: true).",
    "tags": ["inbound"],
    "auth": [{"moduleSignature": []}],
    "parameters": [
        OpenApiParameter(
            "module",
            str,
            OpenApiParameter.PATH,
            enum=list(Module.values),
            description="The calling module (404 unknown_module for any other).",
        ),
        OpenApiParameter(
            "event_type",
            str,
            OpenApiParameter.PATH,
            enum=sorted({event_type for _module, event_type in CONTRACTS}),
            description="An event type the module sends (404 unknown_event_type otherwise).",
        ),
        OpenApiParameter(
            EVENT_ID_HEADER,
            {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^[ -\-/-~]+$"},
            OpenApiParameter.HEADER,
            required=True,
            description="The sender's unique id of this event (printable ASCII, no full stop; "
            "it is part of what is signed); resend with the same id.",
        ),
    ],
    "request": {"application/json": OpenApiTypes.OBJECT},
    "responses": {
        200: OpenApiResponse(OpenApiTypes.OBJECT, description="Accepted: the contract's answer."),
        400: error(
            "Not JSON, no or a malformed event id, or the body breaks the contract "
            "(`field` names it)."
        ),
        401: error(
            "The signature is missing, malformed, wrong (secret, body or event id) or outside "
            "±300 s."
        ),
        404: error("No such module or event type, or a record the body names does not exist."),
        405: error("Only POST is allowed."),
        409: error("The event id was used for another body, or the record's state refuses it."),
        415: error("The body is not UTF-8."),
        503: error("No signing secret is configured here for this module."),
    },
}
