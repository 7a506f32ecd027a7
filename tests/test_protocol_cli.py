"""The protocol CLI end to end, on SQLite and on a real PostgreSQL (``docket`` fixture):
init, validate, register, freeze, show, list, amend, schema, and the errors a user can cause
(unknown id, unreadable file, bad or unreachable database, out-of-date schema).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import func, inspect, select, table, text

from docketml.ledger.cli.main import cli
from docketml.ledger.store.db import head_revision, make_engine, upgrade
from docketml.migrations.triggers import missing_triggers

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "protocols" / "library" / "router_entropy_metacog.yaml"
TEXT = SHIPPED.read_text(encoding="utf-8")
PID = "router-entropy-metacog"
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/x"


def variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    assert TEXT.count(old) == 1, old
    path = tmp_path / name
    path.write_text(TEXT.replace(old, new), encoding="utf-8")
    return path


def one_error_line(result, code: int = 2) -> str:
    """The command failed with ``code`` and one clear line on stderr, no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def as_json(result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def row_counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {
                name: conn.execute(select(func.count()).select_from(table(name))).scalar_one()
                for name in inspect(conn).get_table_names()
            }
    finally:
        engine.dispose()


# --- init / validate / register -------------------------------------------------------------


def test_fresh_ledger(docket) -> None:
    data = as_json(docket("init", "--json"))  # init again: idempotent
    assert data["revision"] == head_revision()
    current = as_json(docket("db", "current", "--json"))
    assert current == {"current": head_revision(), "head": head_revision()}
    assert as_json(docket("protocol", "list", "--json")) == []
    line = one_error_line(docket("protocol", "show", "nope"))
    assert "unknown protocol 'nope'" in line and "no protocols yet" in line


def test_validate_prints_id_and_sha(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["protocol", "validate", "--json", str(SHIPPED)])
    data = as_json(result)
    assert data["id"] == PID and data["valid"] is True and len(data["sha256"]) == 64
    human = CliRunner().invoke(cli, ["protocol", "validate", str(SHIPPED)])
    assert human.exit_code == 0 and PID in human.stdout


def test_register_is_idempotent_and_refuses_changed_content(docket, tmp_path: Path) -> None:
    first = as_json(docket("protocol", "register", "--json", str(SHIPPED)))
    assert first["created"] is True
    assert (first["id"], first["version"], first["status"]) == (PID, 1, "registered")
    again = as_json(docket("protocol", "register", "--json", str(SHIPPED)))
    assert again["created"] is False and again["sha256"] == first["sha256"]
    # the same protocol written differently (comments, order) is the same content
    reformatted = tmp_path / "reformatted.yaml"
    reformatted.write_text(
        yaml.safe_dump(dict(reversed(list(yaml.safe_load(TEXT).items())))), encoding="utf-8"
    )
    same = as_json(docket("protocol", "register", "--json", str(reformatted)))
    assert same["created"] is False and same["version"] == 1
    before = row_counts(docket.url)

    changed = variant(tmp_path, "changed.yaml", "seed: 1234\nhypotheses", "seed: 99\nhypotheses")
    line = one_error_line(docket("protocol", "register", str(changed)))
    assert PID in line and "already registered" in line
    assert f"docket protocol amend {PID}" in line
    assert row_counts(docket.url) == before
    listed = as_json(docket("protocol", "list", "--json"))
    assert [p["versions"] for p in listed] == [1]


def test_show_and_list_json(docket, tmp_path: Path) -> None:
    registered = as_json(docket("protocol", "register", "--json", str(SHIPPED)))
    other = variant(tmp_path, "other.yaml", f"id: {PID}", "id: another-study")
    as_json(docket("protocol", "register", "--json", str(other)))

    shown = as_json(docket("protocol", "show", PID, "--json"))
    assert {"id", "version", "sha256", "status", "chain"} <= set(shown)
    assert (shown["id"], shown["version"], shown["status"]) == (PID, 1, "registered")
    assert shown["sha256"] == registered["sha256"]
    assert shown["frozen_at"] is None and shown["sign_check"] is None
    assert [v["version"] for v in shown["chain"]] == [1]
    assert shown["protocol"]["id"] == PID  # the canonical content
    assert shown["protocol"]["decision_rules"]["regime_wins"]["margin"] == 0.02

    yaml_text = docket("protocol", "show", PID, "--yaml")
    assert yaml_text.exit_code == 0 and yaml_text.stdout == TEXT  # stored byte for byte
    human = docket("protocol", "show", PID)
    assert human.exit_code == 0 and registered["sha256"] in human.stdout

    listed = as_json(docket("protocol", "list", "--json"))
    assert [p["id"] for p in listed] == ["another-study", PID]
    mine = listed[1]
    assert mine["latest_version"] == 1 and mine["latest_status"] == "registered"
    assert mine["latest_sha256"] == registered["sha256"] and mine["frozen_version"] is None
    assert docket("protocol", "list").exit_code == 0


# --- amend --------------------------------------------------------------------------------------


def test_amend_builds_a_chain(docket, tmp_path: Path) -> None:
    v1 = as_json(docket("protocol", "register", "--json", str(SHIPPED)))
    f2 = variant(tmp_path, "v2.yaml", "    margin: 0.02\n", "    margin: 0.03\n")
    f3 = variant(tmp_path, "v3.yaml", "    margin: 0.02\n", "    margin: 0.04\n")
    v2 = as_json(docket("protocol", "amend", PID, str(f2), "--reason", "wider margin", "--json"))
    v3 = as_json(docket("protocol", "amend", PID, str(f3), "--reason", "wider still", "--json"))
    assert [v["version"] for v in (v1, v2, v3)] == [1, 2, 3]
    assert len({v1["sha256"], v2["sha256"], v3["sha256"]}) == 3
    assert (v2["parent_version"], v3["parent_version"]) == (1, 2)
    assert v3["status"] == "registered"

    shown = as_json(docket("protocol", "show", PID, "--json"))
    assert shown["version"] == 3
    chain = shown["chain"]
    assert [c["version"] for c in chain] == [1, 2, 3]
    assert [c["parent_version"] for c in chain] == [None, 1, 2]
    assert [c["amendment_reason"] for c in chain] == [None, "wider margin", "wider still"]
    assert [c["sha256"] for c in chain] == [v1["sha256"], v2["sha256"], v3["sha256"]]
    old = as_json(docket("protocol", "show", PID, "--version", "2", "--json"))
    assert old["sha256"] == v2["sha256"]
    assert old["protocol"]["decision_rules"]["regime_wins"]["margin"] == 0.03
    bad_version = docket("protocol", "show", PID, "--version", "7")
    assert bad_version.exit_code == 2 and "1, 2, 3" in bad_version.output
    listed = as_json(docket("protocol", "list", "--json"))
    assert listed[0]["versions"] == 3 and listed[0]["latest_version"] == 3
    # registering any version's content again is a no-op naming that version
    again = as_json(docket("protocol", "register", "--json", str(f2)))
    assert again["created"] is False and again["version"] == 2


def test_amend_refusals(docket, tmp_path: Path) -> None:
    as_json(docket("protocol", "register", "--json", str(SHIPPED)))
    f2 = variant(tmp_path, "v2.yaml", "    margin: 0.02\n", "    margin: 0.03\n")
    before = row_counts(docket.url)

    missing = docket("protocol", "amend", PID, str(f2))
    assert missing.exit_code == 2 and "--reason" in missing.output
    for blank in ("", "   "):
        line = one_error_line(docket("protocol", "amend", PID, str(f2), "--reason", blank))
        assert "--reason is required" in line
    line = one_error_line(docket("protocol", "amend", PID, str(SHIPPED), "--reason", "no-op"))
    assert "identical to version 1" in line
    other_id = variant(tmp_path, "other.yaml", f"id: {PID}", "id: another-study")
    line = one_error_line(docket("protocol", "amend", PID, str(other_id), "--reason", "x"))
    assert "'another-study'" in line and "keeps the protocol id" in line
    line = one_error_line(docket("protocol", "amend", "nope", str(f2), "--reason", "x"))
    assert "unknown protocol 'nope'" in line and PID in line
    broken = variant(tmp_path, "broken.yaml", "    margin: 0.02\n", "    margn: 0.03\n")
    result = docket("protocol", "amend", PID, str(broken), "--reason", "typo")
    typo_line = broken.read_text().splitlines().index("    margn: 0.03") + 1
    assert (
        result.exit_code == 2
        and f"{broken}:{typo_line}: decision_rules.regime_wins.margn" in result.stderr
    )
    assert row_counts(docket.url) == before

    # after a refused identical amendment, a real one still works and is v2
    v2 = as_json(docket("protocol", "amend", PID, str(f2), "--reason", "wider", "--json"))
    assert v2["version"] == 2
    line = one_error_line(docket("protocol", "amend", PID, str(f2), "--reason", "again"))
    assert "identical to version 2" in line


# --- freeze (needs the sign-check) --------------------------------------------------------------


def test_freeze_then_amend_then_freeze(docket, tmp_path: Path) -> None:
    as_json(docket("protocol", "register", "--json", str(SHIPPED)))
    frozen = as_json(docket("protocol", "freeze", PID, "--json"))
    assert frozen["status"] == "frozen" and frozen["newly_frozen"] is True
    assert frozen["frozen_at"] and frozen["sign_check"]["passed"] is True
    again = as_json(docket("protocol", "freeze", PID, "--json"))
    assert again["newly_frozen"] is False and again["sha256"] == frozen["sha256"]
    shown = as_json(docket("protocol", "show", PID, "--json"))
    assert shown["status"] == "frozen" and shown["sign_check"]["passed"] is True
    # same content after freezing: still a no-op; different content: amend
    assert as_json(docket("protocol", "register", "--json", str(SHIPPED)))["created"] is False
    f2 = variant(tmp_path, "v2.yaml", "    margin: 0.02\n", "    margin: 0.03\n")
    v2 = as_json(docket("protocol", "amend", PID, str(f2), "--reason", "wider", "--json"))
    assert v2["status"] == "registered" and v2["parent_version"] == 1
    listed = as_json(docket("protocol", "list", "--json"))[0]
    assert (listed["latest_version"], listed["frozen_version"]) == (2, 1)
    assert listed["frozen_sha256"] == frozen["sha256"]
    v2_frozen = as_json(docket("protocol", "freeze", PID, "--json"))
    assert v2_frozen["version"] == 2 and v2_frozen["status"] == "frozen"
    listed = as_json(docket("protocol", "list", "--json"))[0]
    assert listed["frozen_version"] == 2


def test_freeze_refused_when_the_sign_check_fails(docket, tmp_path: Path) -> None:
    # the sign-check example states the metric backwards: `better` scores worse
    backwards = variant(
        tmp_path,
        "backwards.yaml",
        "      - better: {bpb_before: 2.10, bpb_after: 2.12}\n"
        "        worse: {bpb_before: 2.10, bpb_after: 3.40}\n",
        "      - better: {bpb_before: 2.10, bpb_after: 3.40}\n"
        "        worse: {bpb_before: 2.10, bpb_after: 2.12}\n",
    )
    as_json(docket("protocol", "register", "--json", str(backwards)))
    result = docket("protocol", "freeze", PID)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    shown = as_json(docket("protocol", "show", PID, "--json"))
    assert shown["status"] == "registered" and shown["frozen_at"] is None
    assert shown["sign_check"]["passed"] is False  # the failed report is kept


# --- schema ---------------------------------------------------------------------------------


def schema_from_cli() -> dict:
    result = CliRunner().invoke(cli, ["protocol", "schema"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_schema_is_a_json_schema_that_accepts_the_shipped_protocol() -> None:
    schema = schema_from_cli()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert {"docket", "id", "title", "hypotheses", "decision_rules"} <= set(schema["required"])
    instance = yaml.safe_load(TEXT)
    try:
        import jsonschema
    except ImportError:  # structural check only
        assert set(instance) <= set(schema["properties"])
        assert all("$ref" not in str(v) or "$defs" in schema for v in schema["properties"].values())
        return
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors(instance)) == []
    instance["titel"] = instance.pop("title")
    messages = [e.message for e in validator.iter_errors(instance)]
    assert any("'titel' was unexpected" in m for m in messages)
    assert any("'title' is a required property" in m for m in messages)
    instance["title"] = instance.pop("titel")
    instance["decision_rules"]["regime_wins"]["margn"] = 0.1
    assert list(validator.iter_errors(instance))


def test_docs_schema_file_matches_the_cli() -> None:
    """docs/protocol.schema.json (referenced by the shipped YAML) is `docket protocol schema`."""
    path = REPO / "docs" / "protocol.schema.json"
    assert path.is_file(), "regenerate: docket protocol schema > docs/protocol.schema.json"
    assert json.loads(path.read_text(encoding="utf-8")) == schema_from_cli()
    assert "$schema=../../docs/protocol.schema.json" in TEXT
    assert (SHIPPED.parent / "../../docs/protocol.schema.json").resolve() == path.resolve()


def test_docs_document_every_schema_field() -> None:
    """docs/protocol.md has a section per schema model with a table row per field."""
    from pydantic import BaseModel

    from docketml.protocols import schema
    from docketml.protocols.expr import _FUNCS

    doc = (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")
    models = [
        obj
        for obj in vars(schema).values()
        if isinstance(obj, type)
        and issubclass(obj, BaseModel)
        and obj.__module__ == schema.__name__
        and obj is not schema.StrictModel
    ]
    assert len(models) >= 14
    for model in models:
        heading = f"### `{model.__name__}`"
        assert heading in doc, heading
        section = doc.split(heading, 1)[1].split("\n### ", 1)[0]
        for field in model.model_fields:
            assert f"| `{field}` |" in section, f"{model.__name__}.{field} is not documented"
    for name in _FUNCS:
        assert f"`{name}`" in doc


# --- errors a user can cause --------------------------------------------------------------------


def test_unknown_protocol_id_names_the_known_ones(docket) -> None:
    as_json(docket("protocol", "register", "--json", str(SHIPPED)))
    commands = [["show", "nope"], ["show", "nope", "--json"], ["signcheck", "nope"]]
    commands += [["freeze", "nope"], ["simulate", "nope"]]
    for command in commands:
        line = one_error_line(docket("protocol", *command))
        assert line == f"docket: unknown protocol 'nope'; known: {PID}"


def test_unreadable_files(docket_sqlite, tmp_path: Path) -> None:
    """(The file is read before the ledger is opened: one backend is enough.)"""
    docket = docket_sqlite
    cases = {
        tmp_path / "missing.yaml": "file not found",
        tmp_path / "plain.txt" / "inside.yaml": "cannot read",
    }
    (tmp_path / "plain.txt").write_text("not a directory")
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.yaml"
        locked.write_text(TEXT)
        locked.chmod(0)
        cases[locked] = "cannot read"
    for path, message in cases.items():
        for command in ("validate", "register"):
            line = one_error_line(docket("protocol", command, str(path)))
            assert line.startswith(f"{path}: ") and message in line
    directory = docket("protocol", "register", str(tmp_path))
    assert directory.exit_code == 2 and "is a directory" in directory.output
    assert "Traceback" not in directory.output
    assert as_json(docket("protocol", "list", "--json")) == []


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("not a url", "not a database URL"),
        ("mysql://user@host/db", "unsupported database 'mysql'"),
        ("postgresql+nosuchdriver://u@h/db", "cannot use"),
    ],
)
def test_bad_database_url(url: str, fragment: str, tmp_path: Path) -> None:
    runner = CliRunner()
    for args in (["protocol", "list"], ["init"], ["protocol", "register", str(SHIPPED)]):
        result = runner.invoke(cli, args, env={"DOCKET_DB": url})
        line = one_error_line(result)
        assert line.startswith("docket: ") and fragment in line, line
        via_option = runner.invoke(cli, ["--db", url, *args])
        assert one_error_line(via_option) == line


def test_unreachable_server() -> None:
    runner = CliRunner()
    for args in (["init"], ["protocol", "list", "--json"], ["db", "upgrade"], ["db", "current"]):
        result = runner.invoke(cli, ["--db", UNREACHABLE, *args])
        line = one_error_line(result)
        assert "127.0.0.1:1" in line and "Connection refused" in line, line


def test_missing_ledger_names_init(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nothing-here.db'}"
    line = one_error_line(CliRunner().invoke(cli, ["--db", url, "protocol", "list"]))
    assert "run `docket init` first" in line


def test_out_of_date_ledger_is_refused_until_upgraded(ledger_url: str, tmp_path: Path) -> None:
    engine = make_engine(ledger_url, create=True)
    try:
        upgrade(engine, "0001")
    finally:
        engine.dispose()
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli, ["--db", ledger_url, *args])

    assert "0001" != head_revision()
    for args in (
        ["protocol", "list"],
        ["protocol", "register", str(SHIPPED)],
        ["protocol", "show", PID],
    ):
        line = one_error_line(run(*args))
        assert "revision 0001" in line and "`docket db upgrade`" in line, line
    assert as_json(run("db", "current", "--json")) == {"current": "0001", "head": head_revision()}
    upgraded = as_json(run("db", "upgrade", "--json"))
    assert upgraded == {"before": "0001", "after": head_revision()}
    assert as_json(run("protocol", "list", "--json")) == []
    assert as_json(run("protocol", "register", "--json", str(SHIPPED)))["created"] is True
    engine = make_engine(ledger_url)
    try:
        with engine.connect() as conn:
            assert missing_triggers(conn) == []  # 0002 rebuilt costs and re-created its triggers
        # a ledger from a newer docket is refused too, naming the other fix
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        engine.dispose()
    line = one_error_line(run("protocol", "list"))
    assert "9999" in line and "unknown to this docket" in line


def test_console_script_never_shows_a_traceback(tmp_path: Path) -> None:
    """The installed `docket` entry point, as a user runs it."""
    exe = Path(sys.executable).with_name("docket")
    assert exe.exists(), exe
    env = {**os.environ, "DOCKET_DB": UNREACHABLE}
    proc = subprocess.run(
        [str(exe), "protocol", "list"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert proc.stderr.startswith("docket: cannot connect to the ledger at ")
    assert len(proc.stderr.strip().splitlines()) == 1
