"""Configuration profiles and ``perpflow config check``, run as the operator runs it: a subprocess
with its own environment, asserting its output and exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from perpflow.settings import CREDENTIALS, ConfigError, load_settings
from tests.conftest import ROOT


def config_check(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``perpflow config check`` in ``tmp_path`` (profiles under ``tmp_path/config``) with only
    ``env`` among the PERPFLOW_* variables."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("PERPFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "perpflow.cli", "config", "check", *args],
        cwd=tmp_path, env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True, text=True, timeout=120,
    )


def write_profile(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / "config" / f"{name}.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def lines_by_field(stdout: str) -> dict[str, str]:
    return {line.split(" = ", 1)[0]: line.split(" = ", 1)[1] for line in stdout.splitlines()
            if " = " in line}


def test_profile_values_with_environment_on_top_and_their_sources(tmp_path):
    write_profile(tmp_path, "staging", """
database_url = "postgresql+asyncpg://perpflow:S1-PW@db:5432/perpflow"
exchange_retries = 2
dask_workers = 3
[[exchanges]]
id = "okx"
password = "S1-PASS"
""")
    env = {"PERPFLOW_PROFILE": "staging", "PERPFLOW_DASK_WORKERS": "5",
           "PERPFLOW_ALERT_WEBHOOK_URL": "https://hooks.example/S1-HOOK"}
    done = config_check(tmp_path, env)
    assert done.returncode == 0, done.stderr
    fields = lines_by_field(done.stdout)
    assert done.stdout.startswith("profile: staging (config/staging.toml)")
    assert fields["database_url"] == (
        "postgresql+asyncpg://perpflow:***@db:5432/perpflow  [profile staging]"
    )
    assert fields["exchange_retries"] == "2  [profile staging]"
    assert fields["dask_workers"] == "5  [environment]"
    assert fields["alert_webhook_url"] == '"**********"  [environment]'
    assert fields["funding_interval_seconds"] == "300  [default]"
    assert json.loads(fields["exchanges"].rsplit("  [", 1)[0]) == [
        {"id": "okx", "password": "**********"}
    ]
    assert "S1-" not in done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("configuration OK")


def test_config_option_and_unknown_variable_warning(tmp_path):
    path = write_profile(tmp_path, "elsewhere", "ticker_interval_seconds = 30\n")
    env = {"PERPFLOW_TICKER_INTERVALSECONDS": "S2-VALUE"}
    done = config_check(tmp_path, env, "--config", str(path))
    assert done.returncode == 0, done.stderr
    assert lines_by_field(done.stdout)["ticker_interval_seconds"] == "30  [profile elsewhere]"
    assert "warning: unknown environment variable PERPFLOW_TICKER_INTERVALSECONDS" in done.stderr
    assert "S2-VALUE" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    "profile_text, env, words",
    [
        ('databse_url = "postgresql+asyncpg://u:S3-PW@h/db"\n', {},
         ["databse_url = (value hidden: unknown field)"]),
        ('[[exchanges]]\nid = "okx"\napikey = "S3-KEY"\n', {},
         ["exchanges.0.apikey = (value hidden: unknown field)"]),
        ('database_url = "host=h password=S3-PW"\n', {},
         ["database_url = (value hidden: not a parsable URL)"]),
        ("dask_workers = 0\n", {}, ["dask_workers = 0: Input should be greater than 0"]),
        ("dask_workers = [\n", {}, ["profile file", "not valid TOML"]),
        ("dask_workers = 2\n", {"PERPFLOW_EXCHANGES": '{"id": "okx", "secret": "S3-SEC"}'},
         ["exchanges = (value hidden: a JSON object or list)"]),
    ],
    ids=["unknown-key", "venue-unknown-key", "bad-url", "bad-value", "bad-toml", "env-object"],
)
def test_a_bad_profile_exits_non_zero_naming_the_field(tmp_path, profile_text, env, words):
    write_profile(tmp_path, "bad", profile_text)
    done = config_check(tmp_path, {"PERPFLOW_PROFILE": "bad", **env})
    assert done.returncode == 1 and done.stdout == ""
    for word in words:
        assert word in done.stderr
    assert "S3-" not in done.stderr


@pytest.mark.parametrize("env, word", [
    ({"PERPFLOW_PROFILE": "missing"},
     "PERPFLOW_PROFILE = 'missing': profile file 'config/missing.toml' does not exist"),
    ({"PERPFLOW_PROFILE": "../etc/x"}, "PERPFLOW_PROFILE = '../etc/x': expected a name"),
    ({"PERPFLOW_CONFIG": "/nonexistent/p.toml"},
     "PERPFLOW_CONFIG: profile file '/nonexistent/p.toml' does not exist"),
])
def test_a_missing_profile_is_an_error(tmp_path, env, word):
    done = config_check(tmp_path, env)
    assert done.returncode == 1 and word in done.stderr


def test_usage_error_exits_2(tmp_path):
    assert config_check(tmp_path, {}, "--nope").returncode == 2


@pytest.mark.parametrize("name", ["dev", "staging", "production"])
def test_shipped_profiles_are_valid(monkeypatch, name):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PERPFLOW_PROFILE", name)
    for var in ("PERPFLOW_DATABASE_URL", "PERPFLOW_EXCHANGES", "PERPFLOW_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    settings = load_settings()
    assert settings.exchanges and settings.alert_webhook_url is None
    # no credential in a file kept in the repository
    assert make_url(settings.database_url.get_secret_value()).password is None
    assert all(
        getattr(venue, field) is None for venue in settings.exchanges for field in CREDENTIALS
    )


def test_flows_read_the_profile(monkeypatch, tmp_path):
    """``load_settings`` (what every flow run calls) reads the profile; keyword overrides win."""
    write_profile(tmp_path, "p", "per_symbol_max = 9\nexchange_retries = 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PERPFLOW_PROFILE", "p")
    monkeypatch.setenv("PERPFLOW_EXCHANGE_RETRIES", "2")
    settings = load_settings(per_symbol_max=4)
    assert (settings.per_symbol_max, settings.exchange_retries) == (4, 2)
    monkeypatch.setenv("PERPFLOW_PROFILE", "absent")
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_console_script_is_declared():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "perpflow"]
    assert script.value == "perpflow.cli:main" and callable(script.load())
