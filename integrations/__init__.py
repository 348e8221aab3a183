"""Clients of the outside world (SMTP, Slack, DocuSign, Stripe, the CRM), built once in worker.py and injected."""
