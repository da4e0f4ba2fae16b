"""What machines call: click redirects (mail clients, link scanners), webhooks (ESPs' reports), /metrics (Prometheus)."""
