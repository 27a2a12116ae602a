"""Provider webhook endpoints (each verifies its signature before parsing anything)."""


urlpatterns: list = [
    # DNA Payments receivers (integrations/dna/webhooks.py) are added here.
    # GoCardless receiver (subscriptions/webhooks.py) is added here.
]
