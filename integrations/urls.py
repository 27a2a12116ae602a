"""Provider webhook endpoints (each verifies its signature before parsing anything)."""

from django.urls import path

from integrations.dna.webhooks import dna_callback, dna_terminal_webhook
from subscriptions.webhooks import gocardless_webhook

urlpatterns: list = [
    path("dna/", dna_callback, name="dna-callback"),
    path("dna/terminal/", dna_terminal_webhook, name="dna-terminal-webhook"),
    path("gocardless/", gocardless_webhook, name="gocardless-webhook"),
]
