"""Domain errors with stable machine-readable codes; every surface renders them the same way."""

from __future__ import annotations


class PaymentError(Exception):
    """A request the domain refuses, with a code for machines and a message for people."""

    code = "payment_error"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.field = field

    def as_dict(self) -> dict:
        body = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        return body


class InvalidTransition(PaymentError):
    code = "invalid_transition"
    status = 409


class NotFound(PaymentError):
    code = "not_found"
    status = 404
