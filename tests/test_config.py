"""The configuration: one strict model for file, environment and flags, and its one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.config import Config, ConfigError, SqlSource, Tolerances, load_config

ALL_KEYS = ("bom_accuracy_counts, bucket_rows, closed_through, date_batch_days, landing, lock_stale_after_seconds, "
            "lock_timeout_seconds, lookback_days, plant_timezones, plants, prune_landing, reprocess_master_data, skip_unchanged_reruns, spill_dir, sql, tolerances, "
            "warehouse, workers")

# (file text, what the error says after "config file PATH: "), written out by hand
BAD_FILES = [
    pytest.param("[tolerances]\nabs_qtty = 1.0\n",
                 "[tolerances] abs_qtty = 1.0: unknown key (did you mean abs_qty?); allowed keys: abs_qty, abs_value, pct",
                 id="unknown-key-in-a-table"),
    pytest.param("lookbak_days = 3\n",
                 f"lookbak_days = 3: unknown key (did you mean lookback_days?); allowed keys: {ALL_KEYS}",
                 id="unknown-key"),
    pytest.param("[sql]\nschema = 'erp'\ntable = { items = 'item_master' }\n",
                 "[sql] table = {\"items\": \"item_master\"}: unknown key (did you mean tables?); allowed keys: "
                 "columns, conn_id, schema, tables, url, url_env",
                 id="unknown-sql-key"),
    pytest.param('lookback_days = "7"\n', 'lookback_days = "7": wrong type; allowed: an integer >= 0',
                 id="string-for-integer"),
    pytest.param('closed_through = "2026-01-31"\n',
                 'closed_through = "2026-01-31": wrong type; allowed: a date without quotes, e.g. closed_through = '
                 '2026-01-31', id="string-for-date"),
    pytest.param("lookback_days = true\n", "lookback_days = true: wrong type; allowed: an integer >= 0",
                 id="boolean-for-integer"),
    pytest.param("bucket_rows = 1.5\n", "bucket_rows = 1.5: wrong type; allowed: an integer >= 1",
                 id="float-for-integer"),
    pytest.param('plants = "P1"\n', 'plants = "P1": wrong type; allowed: a list of strings', id="string-for-list"),
    pytest.param('plants = ["P1", 2]\n', "plants[1] = 2: wrong type; allowed: a list of strings",
                 id="number-in-list"),
    pytest.param("tolerances = 5\n", "tolerances = 5: wrong type; allowed: a table with keys abs_qty, abs_value, pct",
                 id="number-for-table"),
    pytest.param("[tolerances]\nabs_value = \"50\"\n", '[tolerances] abs_value = "50": wrong type; allowed: a number >= 0',
                 id="string-for-number"),
    pytest.param("[sql]\ncolumns = { items = { uom = 3 } }\n",
                 "[sql] columns.items.uom = 3: wrong type; allowed: a table of tables of strings",
                 id="number-in-nested-table"),
    pytest.param("lookback_days = -1\n", "lookback_days = -1: out of range; allowed: an integer >= 0",
                 id="negative-lookback"),
    pytest.param("workers = 0\n", "workers = 0: out of range; allowed: an integer >= 1", id="no-workers"),
    pytest.param("bucket_rows = 0\n", "bucket_rows = 0: out of range; allowed: an integer >= 1", id="empty-buckets"),
    pytest.param("date_batch_days = 0\n", "date_batch_days = 0: out of range; allowed: an integer >= 1",
                 id="empty-batches"),
    pytest.param("bom_accuracy_counts = 0\n", "bom_accuracy_counts = 0: out of range; allowed: an integer >= 1",
                 id="no-accuracy-counts"),
    pytest.param("lock_timeout_seconds = -0.5\n",
                 "lock_timeout_seconds = -0.5: out of range; allowed: a number >= 0", id="negative-timeout"),
    pytest.param("lock_stale_after_seconds = 0\n",
                 "lock_stale_after_seconds = 0: out of range; allowed: a number > 0", id="zero-lease"),
    pytest.param("[tolerances]\npct = -5\n", "[tolerances] pct = -5: out of range; allowed: a number >= 0",
                 id="negative-tolerance"),
    pytest.param('landing = ""\n', 'landing = "": out of range; allowed: a non-empty string', id="empty-landing"),
    pytest.param('plant_timezones = { P9 = "Mars/Olympus" }\n',
                 'plant_timezones.P9 = "Mars/Olympus": not allowed; allowed: a table of plant id = IANA time zone '
                 'name (e.g. P9 = "Europe/Vienna")', id="not-a-time-zone"),
    pytest.param("workers = 0\nlookback_days = -1\n",
                 "lookback_days = -1: out of range; allowed: an integer >= 0 (and 1 more error)", id="two-errors"),
]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "backflush.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "said"), BAD_FILES)
def test_a_bad_file_is_one_line_naming_file_key_value_and_what_is_allowed(tmp_path: Path, text: str,
                                                                          said: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value) == f"config file {path}: {said}"


@pytest.mark.parametrize(("text", "said"), BAD_FILES)
def test_the_cli_says_the_same_line_and_exits_2(tmp_path: Path, text: str, said: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, text)
    assert cli.main(["run", "--date", "2026-02-03", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", f"backflush: config file {path}: {said}\n")


def test_a_bad_file_through_the_installed_command(tmp_path: Path) -> None:
    path = write(tmp_path, "[tolerances]\nabs_qtty = 1.0\n")
    script = Path(sys.executable).parent / "backflush"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pipeline.cli"]
    for args in (["-q", "backfill", "--start", "2026-02-02", "--end", "2026-02-03", "--config", str(path)],
                 ["report", "--from", "2026-02-02", "--to", "2026-02-03", "--out", str(tmp_path / "r.html")]):
        env = {"PATH": "/usr/bin:/bin", "BACKFLUSH_CONFIG": str(path)}  # report: the file named by the variable
        proc = subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == ""
        assert proc.stderr == (f"backflush: config file {path}: [tolerances] abs_qtty = 1.0: unknown key (did you "
                               "mean abs_qty?); allowed keys: abs_qty, abs_value, pct\n")
    assert not (tmp_path / "r.html").exists()


def test_a_secret_is_never_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, "[sql]\nurl = ['postgresql://u:s3cret@db/erp']\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value) == f"config file {path}: [sql] url = (hidden): wrong type; allowed: a string"


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*nowhere\.toml does not exist"):
        load_config(tmp_path / "nowhere.toml", environ={})
    with pytest.raises(ConfigError, match=r"is not valid TOML"):
        load_config(write(tmp_path, "lookback_days = \n"), environ={})
    with pytest.raises(ConfigError, match=r"is a folder, not a file"):
        load_config(tmp_path, environ={})


def test_a_good_file_keeps_every_behaviour(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "backflush.toml"
    path.write_text(
        'landing = "in"\nwarehouse = "s3://bucket/backflush"\nplants = ["P1", "P2"]\nlookback_days = 0\n'
        'plant_timezones = { P9 = "Europe/Vienna" }\nbucket_rows = 1000\nworkers = 1\nspill_dir = "/tmp"\n'
        "lock_stale_after_seconds = 3600\n"
        "[tolerances]\nabs_qty = 1\nabs_value = 90\n"  # integers for numbers: 1 -> 1.0, 90 -> 90.0
        "[sql]\nurl_env = 'ERP_URL'\nschema = 'erp'\ntables = { completions = 'mes_confirmations' }\n"
        "columns = { items = { uom = 'unit' } }\n")
    config = load_config(path, environ={})
    assert config == Config(
        landing=str(tmp_path / "conf" / "in"),  # relative to the file, not to the working folder
        warehouse="s3://bucket/backflush", plants=("P1", "P2"), lookback_days=0,
        plant_timezones={"P9": "Europe/Vienna"}, bucket_rows=1000, workers=1, spill_dir="/tmp",
        lock_stale_after_seconds=3600.0, tolerances=Tolerances(abs_qty=1.0, abs_value=90.0, pct=5.0),
        sql=SqlSource(url_env="ERP_URL", schema="erp", tables={"completions": "mes_confirmations"},
                      columns={"items": {"uom": "unit"}}),
    )
    assert isinstance(config.tolerances.abs_value, float) and config.sql is not None and config.sql.schema == "erp"
    assert load_config(None, environ={}) == Config()  # no file: the defaults
    assert Config().lookback_days == 7 and Config().workers == 2 and Config().tolerances.abs_value == 50.0


def test_layers_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "lookback_days = 5\nworkers = 3\n[tolerances]\nabs_value = 90.0\n")
    environ = {"BACKFLUSH_CONFIG": str(path), "BACKFLUSH_LOOKBACK_DAYS": "4", "BACKFLUSH_TOLERANCES__PCT": "2.5",
               "BACKFLUSH_WAREHOUSE": "s3://env-bucket/wh", "BACKFLUSH_PLANTS": '["P2"]',
               "BACKFLUSH_REQUIRE_BROWSER": "yes"}  # not config: ignored
    config = load_config(None, environ=environ, lookback_days=2)
    assert config.lookback_days == 2  # flag 2 over environment 4 over file 5
    assert config.workers == 3  # the file's
    assert config.warehouse == "s3://env-bucket/wh" and config.plants == ("P2",)  # the environment's
    # a table is merged key by key: pct from the environment, abs_value from the file, abs_qty the default
    assert config.tolerances == Tolerances(abs_qty=0.0, abs_value=90.0, pct=2.5)


@pytest.mark.parametrize(("name", "value", "said"), [
    ("BACKFLUSH_WORKERS", "0", "workers = 0: out of range; allowed: an integer >= 1"),
    ("BACKFLUSH_LOOKBACK_DAYS", "seven", 'lookback_days = "seven": wrong type; allowed: an integer >= 0'),
    ("BACKFLUSH_TOLERANCES__PCT", "-1", "[tolerances] pct = -1: out of range; allowed: a number >= 0"),
])
def test_a_bad_environment_variable_is_named(name: str, value: str, said: str,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={name: value})
    assert str(caught.value) == f"environment variable {name}: {said}"
    monkeypatch.setenv(name, value)
    monkeypatch.delenv("BACKFLUSH_CONFIG", raising=False)
    assert cli.main(["run", "--date", "2026-02-03"]) == 2
    assert capsys.readouterr().err == f"backflush: environment variable {name}: {said}\n"


def test_a_bad_flag_value_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--date", "2026-02-03", "--lookback-days", "-3"]) == 2
    assert capsys.readouterr().err == \
        "backflush: command line: lookback_days = -3: out of range; allowed: an integer >= 0\n"
    with pytest.raises(ConfigError, match=r"^arguments: workers = 0: out of range; allowed: an integer >= 1$"):
        load_config(None, environ={}, workers=0)
    with pytest.raises(ConfigError, match=r"^arguments: bucket_rows = 0: out of range"):
        Config().replace(bucket_rows=0)  # a copy is validated too
    assert Config().replace(workers=1, lookback_days=None).workers == 1  # None: unchanged


def test_the_model_is_strict_in_code_too() -> None:
    with pytest.raises(ValueError, match="lookback_days"):
        Config(lookback_days="7")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="abs_qtty"):
        Tolerances(abs_qtty=1.0)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="frozen"):
        Config().workers = 3  # type: ignore[misc]


def test_the_readme_example_is_a_valid_config(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    config = load_config(write(tmp_path, example), environ={})
    assert (config.landing, config.lookback_days, config.workers, config.bucket_rows) == (
        "/data/landing", 7, 2, 300_000)
    assert config.plant_timezones == {"P9": "Europe/Vienna"} and config.tolerances == Tolerances()
