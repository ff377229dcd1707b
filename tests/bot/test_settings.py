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


def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DISCORD_TOKEN", "ENGINE_DEVICE", "BOT_DATABASE_URL", "BOT_LEASE_SECONDS", "BOT_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_the_database_is_the_data_dirs_sqlite_file_unless_a_postgresql_url_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("BOT_DATA_DIR", "/srv/vqbot")
    plain = load_settings(discord_token="t", _env_file=None)
    assert plain.store_url == Path("/srv/vqbot/jobs.sqlite3")
    assert plain.database_for_log == "SQLite /srv/vqbot/jobs.sqlite3"
    monkeypatch.setenv("BOT_DATABASE_URL", "postgresql://vq:s3cret@db.lan:5433/vqbot")
    shared = load_settings(discord_token="t", _env_file=None)
    assert shared.store_url == "postgresql://vq:s3cret@db.lan:5433/vqbot"
    assert shared.database_for_log == "PostgreSQL postgresql://vq:***@db.lan:5433/vqbot"
    assert "s3cret" not in repr(shared)
    assert "s3cret" in shared.secrets()  # the log filter hides it
    monkeypatch.setenv("BOT_DATABASE_URL", "postgresql://vq:p%40ss@db.lan/vqbot")
    quoted = load_settings(discord_token="t", _env_file=None)
    assert {"p%40ss", "p@ss"} <= set(quoted.secrets())
    assert quoted.database_for_log == "PostgreSQL postgresql://vq:***@db.lan/vqbot"


@pytest.mark.parametrize("url", ["mysql://u@h/db", "db.lan:5432/vqbot", "sqlite:///jobs.sqlite3"])
def test_a_database_url_that_is_not_postgresql_stops_with_one_line(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("BOT_DATABASE_URL", url)
    with pytest.raises(SystemExit) as exc:
        load_settings(discord_token="t", _env_file=None)
    message = str(exc.value)
    assert message.startswith("configuration error: BOT_DATABASE_URL: ")
    assert "postgresql://user[:password]@host[:port]/dbname" in message
    assert "\n" not in message


def test_engine_device_none_is_a_front_end_and_no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("ENGINE_DEVICE", "none")
    front = load_settings(discord_token="t", _env_file=None)
    assert not front.renders
    with pytest.raises(SystemExit) as exc:
        load_settings(worker=True, _env_file=None)
    assert str(exc.value) == "configuration error: ENGINE_DEVICE: a render worker needs a device, not none"
    monkeypatch.setenv("ENGINE_DEVICE", "none,cpu")
    with pytest.raises(SystemExit) as exc:
        load_settings(discord_token="t", _env_file=None)
    assert str(exc.value).startswith("configuration error: ENGINE_DEVICE: ")
    monkeypatch.setenv("ENGINE_DEVICE", "cpu")
    assert load_settings(discord_token="t", _env_file=None).renders


def test_a_worker_needs_no_token_but_the_front_end_does(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("ENGINE_DEVICE", "cpu")
    worker = load_settings(worker=True, _env_file=None)
    assert worker.discord_token is None
    assert worker.secrets() == ()
    with pytest.raises(SystemExit) as exc:
        load_settings(_env_file=None)
    assert str(exc.value) == "configuration error: DISCORD_TOKEN: Field required"


@pytest.mark.parametrize(("value", "ok"), [("30", True), ("60", True), ("3", True), ("61", False), ("0", False)])
def test_the_lease_is_positive_and_at_most_a_minute(value: str, ok: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("BOT_LEASE_SECONDS", value)
    if ok:
        assert load_settings(discord_token="t", _env_file=None).bot_lease_seconds == float(value)
        return
    with pytest.raises(SystemExit) as exc:
        load_settings(discord_token="t", _env_file=None)
    assert str(exc.value).startswith("configuration error: BOT_LEASE_SECONDS: ")


def test_a_front_end_config_has_no_runner_no_memory_limit_and_polls_for_results(tmp_path: Path) -> None:
    code = (
        "import sys; from bot.__main__ import service_config; from bot.settings import load_settings\n"
        f"s = load_settings(discord_token='t', engine_device='none', bot_data_dir={str(tmp_path)!r},"
        " bot_lease_seconds=12, _env_file=None)\n"
        "c = service_config(s, worker_id='w')\n"
        "assert c.runner is None and c.queue.admission.memory_gb is None, c\n"
        "assert c.bot.result_poll_seconds and c.bot.lease_s == 12, c.bot\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "w = service_config(load_settings(worker=True, engine_device='cpu', engine_memory_gb=1,"
        " bot_lease_seconds=12, _env_file=None), worker_id='w')\n"
        "assert w.runner is not None and w.runner.lease_s == 12 and w.runner.worker_id == 'w', w.runner\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
