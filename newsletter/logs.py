"""How commands and `serve` write their log to stderr: lines for people, or JSON for log shippers.

NEWSLETTER_LOG_FORMAT=json gives one JSON object a line (python-json-logger): `time`, `level`,
`logger`, `event` (the message), and whatever a record carries besides, such as the morning send's
`issue` and `counts`. Logging starts as text before the settings are read (a settings error is one
line for a person either way) and switches as soon as they are.
"""

from __future__ import annotations

import logging
import sys

TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_NAMES = {"asctime": "time", "levelname": "level", "name": "logger", "message": "event"}
# Libraries that say too much at INFO; their warnings still come through.
NOISY = ("httpx", "httpcore", "aiosmtplib", "mail.log", "sqlalchemy", "alembic")


def json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(JSON_FIELDS, rename_fields=JSON_NAMES, datefmt="%Y-%m-%dT%H:%M:%S%z",
                         json_ensure_ascii=False)


def text_formatter() -> logging.Formatter:
    return logging.Formatter(TEXT_FORMAT, datefmt="%H:%M:%S")


def setup(verbose: bool) -> None:
    """Log to stderr as text, until `use_format` says otherwise."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=TEXT_FORMAT, datefmt="%H:%M:%S",
                        stream=sys.stderr)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.migration").setLevel(logging.INFO)  # "Running upgrade 0001 -> 0002"


def use_format(log_format: str) -> None:
    """Switch every handler of the root logger to `log_format` ("text" or "json")."""
    formatter = json_formatter() if log_format == "json" else text_formatter()
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def uvicorn_log_config(log_format: str) -> dict | None:
    """uvicorn's own loggers (errors, the access log) in the same format; None keeps uvicorn's default."""
    if log_format != "json":
        return None
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "newsletter.logs.json_formatter"}},
        "handlers": {"stderr": handler},
        "loggers": {name: {"handlers": ["stderr"], "level": "INFO", "propagate": False}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }
