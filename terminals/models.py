"""Card-present terminals registered to a practice's site."""

from __future__ import annotations

import uuid

from django.core.exceptions import ValidationError
from django.db import models


class TerminalKind(models.TextChoices):
    COUNTERTOP = "countertop", "Countertop (reception)"
    HANDHELD = "handheld", "Handheld (surgery)"


class Terminal(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    practice = models.ForeignKey(
        "practices.Practice", on_delete=models.PROTECT, related_name="terminals"
    )
    site = models.ForeignKey("practices.Site", on_delete=models.PROTECT, related_name="terminals")
    label = models.CharField(max_length=100)
    kind = models.CharField(max_length=12, choices=TerminalKind.choices)
    tid = models.CharField(
        max_length=64, unique=True, help_text="Terminal serial (axept Connect tid)."
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["label"]
        constraints = [
            models.UniqueConstraint(fields=["site", "label"], name="terminal_label_unique_in_site")
        ]

    def __str__(self):
        return f"{self.label} ({self.get_kind_display()})"

    def clean(self):
        if self.site_id and self.practice_id and self.site.practice_id != self.practice_id:
            raise ValidationError({"site": "The site must belong to the terminal's practice."})
