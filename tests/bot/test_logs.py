"""Logs never carry the bot token or interaction/webhook tokens."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bot.logs import JsonFormatter, RedactingFilter

BOT_TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAw.GfakeB.secret-bot-token-0123456789"
INTERACTION_TOKEN = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDEyMzQ1Njc4OQ-abcdefghijklmnop"


@pytest.fixture
def capture() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter([BOT_TOKEN]))
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("tests.bot.redaction")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_tokens_in_messages_arguments_and_urls_are_redacted(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    logger.warning("token is %s", BOT_TOKEN)
    logger.warning(
        "We are being rate limited. POST https://discord.com/api/v10/webhooks/123/%s responded with 429",
        INTERACTION_TOKEN,
    )
    logger.info("POST /api/v10/interactions/456/%s/callback", INTERACTION_TOKEN)
    text = stream.getvalue()
    assert BOT_TOKEN not in text
    assert INTERACTION_TOKEN not in text
    assert text.count("[redacted]") == 3
    assert "webhooks/123/[redacted]" in text


def test_tokens_in_tracebacks_are_redacted(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    try:
        raise RuntimeError(f"bad {BOT_TOKEN}")
    except RuntimeError:
        logger.exception("failed")
    assert BOT_TOKEN not in stream.getvalue()
    assert "RuntimeError: bad [redacted]" in stream.getvalue()


def test_json_lines_carry_the_extra_fields() -> None:
    record = logging.LogRecord("bot.x", logging.INFO, __file__, 1, "job %s queued", (42,), None)
    record.job = 42
    data = json.loads(JsonFormatter().format(record))
    assert data["message"] == "job 42 queued"
    assert data["job"] == 42
    assert data["level"] == "INFO"
