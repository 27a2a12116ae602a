"""Who did something: a staff member, an authenticated patient, a system trigger or a provider.

Every service function takes an `Actor`; the audit log records its kind, id and
label, and permission checks read the staff user behind it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Actor:
    kind: str  # staff | patient | system | provider
    id: str
    label: str
    user: Any = field(default=None, compare=False, repr=False)
    patient: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def staff(cls, user) -> Actor:
        label = user.get_full_name() or user.get_username()
        return cls(kind="staff", id=str(user.pk), label=label, user=user)

    @classmethod
    def for_patient(cls, patient) -> Actor:
        return cls(kind="patient", id=str(patient.pk), label="patient-self-serve", patient=patient)

    @classmethod
    def system(cls, name: str) -> Actor:
        """A named system trigger, e.g. 'appointment_manager' or 'janitor'."""
        return cls(kind="system", id=name, label=name)

    @classmethod
    def provider(cls, name: str) -> Actor:
        return cls(kind="provider", id=name, label=name)

    @property
    def is_staff(self) -> bool:
        return self.kind == "staff"
