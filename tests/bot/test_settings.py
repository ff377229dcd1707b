"""Settings: environment and .env parsing, defaults, and one-line errors naming the setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_environment_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "abc.def")
    monkeypatch.setenv("ENGINE_DEVICE", "cuda:0, cuda:1")
    monkeypatch.setenv("BOT_ALLOWED_CHANNELS", "12,34")
    monkeypatch.setenv("BOT_GUILD_ID", "")  # empty means unset, as in .env.example
    monkeypatch.setenv("DISCORD_API_BASE", "http://127.0.0.1:9/api/v10/")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.engine_device == ("cuda:0", "cuda:1")
    assert settings.bot_allowed_channels == (12, 34)
    assert settings.bot_guild_id is None
    assert settings.discord_api_base == "http://127.0.0.1:9/api/v10"
    assert settings.engine_model == "vqgan_imagenet_f16_16384"
    assert "abc.def" not in repr(settings)


def test_dotenv_file_is_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / ".env"
    env.write_text("DISCORD_TOKEN=from-file\nBOT_MAX_SIZE=640\nENGINE_MODEL=tiny\n")
    monkeypatch.setenv("BOT_MAX_SIZE", "320")
    settings = Settings(_env_file=env)  # type: ignore[call-arg]
    assert settings.discord_token.get_secret_value() == "from-file"
    assert settings.engine_model == "tiny"
    assert settings.bot_max_size == 320


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "DISCORD_TOKEN: Field required"),
        ({"DISCORD_TOKEN": "t", "BOT_MAX_SIZE": "huge"}, "BOT_MAX_SIZE:"),
        ({"DISCORD_TOKEN": "t", "BOT_PREVIEW_SECONDS": "1"}, "BOT_PREVIEW_SECONDS:"),
        ({"DISCORD_TOKEN": "t", "DISCORD_GATEWAY_URL": "gateway.example"}, "DISCORD_GATEWAY_URL:"),
        ({"DISCORD_TOKEN": "t", "BOT_ALLOWED_CHANNELS": "general"}, "BOT_ALLOWED_CHANNELS:"),
    ],
)
def test_a_bad_setting_stops_with_one_line_naming_it(
    env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DISCORD_TOKEN", "BOT_MAX_SIZE", "BOT_PREVIEW_SECONDS", "DISCORD_GATEWAY_URL", "BOT_ALLOWED_CHANNELS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exc:
        load_settings(_env_file=None)
    message = str(exc.value)
    assert expected in message
    assert "\n" not in message


def test_python_m_bot_without_a_token_exits_with_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "bot"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "configuration error: DISCORD_TOKEN: Field required"


def test_every_setting_is_documented_in_env_example() -> None:
    text = (ROOT / ".env.example").read_text()
    missing = [name.upper() for name in Settings.model_fields if f"{name.upper()}=" not in text]
    assert missing == []
