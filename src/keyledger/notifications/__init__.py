"""Outbound webhooks: endpoints (per-endpoint ``whsec_`` secrets, event filters), Standard Webhooks
signing, delivery from the durable outbox with exponential backoff, the SSRF guard and the delivery log."""
