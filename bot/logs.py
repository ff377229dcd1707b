"""Logging for the bot: one setup call, structured lines, and a filter that keeps tokens out."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable

# Interaction and webhook tokens travel in URLs (discord.py logs them on 429s and at DEBUG).
_URL_TOKENS = re.compile(r"(/(?:webhooks|interactions)/\d+/)([A-Za-z0-9_.\-]{20,})")
REDACTED = "[redacted]"


class RedactingFilter(logging.Filter):
    """Replaces the bot token and any interaction/webhook token in a record's final message."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return _URL_TOKENS.sub(rf"\1{REDACTED}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if record.exc_info and record.exc_text is None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any `extra=` fields we set."""

    _STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update({k: v for k, v in vars(record).items() if k not in self._STANDARD})
        if record.exc_text:
            data["exception"] = record.exc_text
        return json.dumps(data, default=str)


def setup_logging(level: str = "INFO", *, secrets: Iterable[str] = (), fmt: str = "text") -> None:
    """Configure the root logger once: our packages at `level`, discord.* at INFO or above."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter(secrets))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in ("bot", "engine", "storage"):
        logging.getLogger(name).setLevel(level)
    # discord.http logs payloads (prompts) and webhook URLs (interaction tokens) at DEBUG.
    logging.getLogger("discord").setLevel(max(logging.INFO, logging.getLevelName(level)))
    logging.getLogger("discord.http").setLevel(logging.WARNING)
