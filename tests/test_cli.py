"""The ``load``, ``export`` and ``info`` commands, through click and a real terminal."""
from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from datasette_embeddings.cli import cli
from tests.helpers import dump_database, file_hashes, make_records, write_parquet

CLI_BIN = str(Path(sys.executable).parent / "datasette-embeddings")


@pytest.fixture
def two_files(tmp_path):
    a = tmp_path / "a.parquet"
    b = tmp_path / "b.parquet"
    write_parquet(a, make_records(n=5, providers=("met", "nga"), models={"clip": 6}))
    write_parquet(b, make_records(n=3, providers=("met",), models={"minilm": 4}, seed=1))
    return a, b


def invoke(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def test_load_prints_a_line_per_file_and_a_summary_per_provider_and_model(tmp_path, two_files):
    a, b = two_files
    db = tmp_path / "x.db"
    result = invoke("load", db, a, b)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{a}: 10 rows in ") and "(10 new, 0 replaced, 0 unchanged, 0 older than stored)" in lines[0]
    assert lines[1].startswith(f"{b}: 3 rows in ")
    summary = lines[lines.index("Loaded per provider and model:") + 1:]
    assert [s.split() for s in summary] == [["met", "clip", "5"], ["met", "minilm", "3"], ["nga", "clip", "5"]]
    again = invoke("load", db, a)
    assert "(0 new, 0 replaced, 10 unchanged, 0 older than stored)" in again.output


def test_load_quiet_prints_nothing(tmp_path, two_files):
    db = tmp_path / "x.db"
    result = invoke("load", db, two_files[0], "--quiet")
    assert result.exit_code == 0
    assert result.output == ""  # click 8.2+: output holds stdout and stderr
    proc = subprocess.run([CLI_BIN, "load", str(db), str(two_files[1]), "-q"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
    assert len(dump_database(db)) == 13


def _run_with_tty_stderr(args) -> tuple[int, str, str]:
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=secondary, text=True)
    os.close(secondary)
    out, _ = proc.communicate(timeout=120)
    chunks = []
    while True:
        try:
            data = os.read(primary, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    return proc.returncode, out, b"".join(chunks).decode()


def test_progress_only_on_a_terminal(tmp_path, two_files):
    a, _ = two_files
    code, out, tty_err = _run_with_tty_stderr([CLI_BIN, "load", str(tmp_path / "tty.db"), str(a)])
    assert code == 0
    assert "rows/s" in tty_err and "10 rows" in tty_err
    assert "rows/s" not in out
    piped = subprocess.run([CLI_BIN, "load", str(tmp_path / "pipe.db"), str(a)], capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and piped.stderr == ""
    assert "Loaded per provider and model:" in piped.stdout
    code, out, tty_err = _run_with_tty_stderr([CLI_BIN, "load", str(tmp_path / "quiet.db"), str(a), "--quiet"])
    assert code == 0 and out == "" and tty_err == ""


def test_info_text_and_json(tmp_path, two_files):
    db = tmp_path / "x.db"
    assert invoke("load", db, *two_files).exit_code == 0
    before = file_hashes(db)
    data = json.loads(invoke("info", db, "--json").output)
    assert data["records"] == 13
    assert [(m["label"], m["dimensions"], m["records"]) for m in data["models"]] == [("clip", 6, 10), ("minilm", 4, 3)]
    assert [(p["provider"], p["model"], p["count"]) for p in data["providers"]] == [
        ("met", "clip", 5), ("met", "minilm", 3), ("nga", "clip", 5)]
    text = invoke("info", db).output.splitlines()
    assert text[0] == "13 records"
    assert "  clip  6-d  10 records" in text and "  minilm  4-d  3 records" in text
    assert "  nga  clip  5" in text
    assert file_hashes(db) == before  # info only reads


def test_export_filters_by_provider_and_model(tmp_path, two_files):
    db = tmp_path / "x.db"
    assert invoke("load", db, *two_files).exit_code == 0
    out = tmp_path / "met-clip.parquet"
    result = invoke("export", db, "-o", out, "--provider", "met", "--model", "clip")
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.num_rows == 5
    assert set(table.column("provider").to_pylist()) == {"met"} and set(table.column("model").to_pylist()) == {"clip"}
    everything = tmp_path / "all.parquet"
    assert invoke("export", db, "-o", everything, "--provider", "met", "--provider", "nga").exit_code == 0
    assert pq.read_table(everything).num_rows == 13


@pytest.mark.parametrize("option,value,message", [
    ("--model", "nope", "unknown model 'nope' (known: clip, minilm)"),
    ("--provider", "louvre", "unknown provider 'louvre' (known: met, nga)"),
])
def test_export_refuses_unknown_names_and_writes_nothing(tmp_path, two_files, option, value, message):
    db = tmp_path / "x.db"
    assert invoke("load", db, *two_files).exit_code == 0
    out = tmp_path / "out.parquet"
    result = invoke("export", db, "-o", out, option, value)
    assert result.exit_code == 1
    assert message in result.output
    assert not out.exists() and not Path(str(out) + ".partial").exists()


def test_export_and_info_refuse_a_database_that_is_not_ours(tmp_path):
    import sqlite3

    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("create table t (x)")
    for args in (["info", other], ["export", other, "-o", tmp_path / "o.parquet"]):
        result = invoke(*args)
        assert result.exit_code == 1
        assert f"{other}: not a datasette-embeddings database" in result.output


def test_missing_database_for_export_is_a_usage_error(tmp_path):
    result = invoke("info", tmp_path / "missing.db")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_help_lists_the_commands():
    result = invoke("--help")
    for name in ("load", "export", "info"):
        assert f"  {name} " in result.output


# ------------------------------------------------------------------ labels are data, not terminal commands

ESCAPES = {
    "provider": "\x1b[2J\x1b[31mred-museum\x1b[0m",  # clear screen, red text
    "model": "clip\x1b]0;owned\x07\x9b1A\nforged line",  # set the window title, C1 CSI, a newline
}


def _no_raw_controls(text: str) -> None:
    assert not any(ch in text for ch in "\x1b\x07\x9b"), repr(text)


def test_control_characters_in_labels_never_reach_the_terminal_raw(tmp_path):
    path = tmp_path / "escapes.parquet"
    write_parquet(path, make_records(n=3, providers=(ESCAPES["provider"],), models={ESCAPES["model"]: 4}))
    db = tmp_path / "e.db"
    loaded = invoke("load", db, path)
    assert loaded.exit_code == 0, loaded.output
    info = invoke("info", db)
    assert info.exit_code == 0
    for output in (loaded.output, info.output):
        _no_raw_controls(output)
        assert "\\x1b[31mred-museum\\x1b[0m" in output  # shown, visibly escaped
        assert "clip\\x1b]0;owned\\x07\\x9b1A\\x0aforged line" in output
        assert not any(line.startswith("forged line") for line in output.splitlines())
    as_json = invoke("info", db, "--json")
    _no_raw_controls(as_json.output)
    assert json.loads(as_json.output)["models"][0]["label"] == ESCAPES["model"]  # JSON keeps the value exact


def test_control_characters_in_error_messages_are_escaped(tmp_path):
    db = tmp_path / "e.db"
    first = tmp_path / "first.parquet"
    write_parquet(first, make_records(n=3, providers=("met",), models={ESCAPES["model"]: 4}))
    assert invoke("load", db, first).exit_code == 0
    wider = tmp_path / "wider.parquet"
    write_parquet(wider, make_records(n=3, providers=("met",), models={ESCAPES["model"]: 6}))
    for result in (invoke("load", db, wider), invoke("export", db, "-o", tmp_path / "o.parquet", "--model", "nope")):
        assert result.exit_code == 1
        _no_raw_controls(result.output)
        assert "clip\\x1b]0;owned" in result.output


@pytest.mark.parametrize("command", [
    ["neighbours"], ["neighbors"], ["set-query-model", "", "x"], ["map"], ["links", "", "--from", "met"],
    ["compare", "", "--a", "x", "--b", "y"], ["evaluate"], ["export", "", "-o", "OUT.parquet"], ["info"], ["validate"],
    ["check-model", "", "x"], ["judgements", "export", "DB", "-o", "OUT.csv"], ["judgements", "import", "DB", "JUDGEMENTS"],
], ids=lambda c: " ".join(a for a in c[:2] if a))
def test_commands_refuse_a_database_that_is_not_ours_with_exit_1(tmp_path, command):
    """One way to open a store (``Store.open``): every command given a SQLite file without our tables
    refuses it by name with exit 1, and writes nothing."""
    import sqlite_utils
    from click.testing import CliRunner

    from datasette_embeddings.cli import cli

    other = tmp_path / "other.db"
    sqlite_utils.Database(other)["things"].insert({"name": "teapot"})
    before = other.read_bytes()
    judgements = Path(__file__).resolve().parent.parent / "demo" / "judgements.csv"
    names = {"DB": str(other), "OUT.parquet": str(tmp_path / "o.parquet"), "OUT.csv": str(tmp_path / "o.csv"),
             "JUDGEMENTS": str(judgements)}
    if "DB" in command:
        args = [names.get(a, a) for a in command]
    else:
        args = [command[0], str(other)] + [names.get(a, a) for a in command[1:] if a]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert "not a datasette-embeddings database (no records table)" in result.output
    assert other.read_bytes() == before
    assert not list(tmp_path.glob("o.*"))
