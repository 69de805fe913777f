"""Tests of the storage seam: both backends (SQLite, PostgreSQL) implement the whole `Storage` interface, and they
alone hold SQL."""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from privacy import store
from privacy.keys import generate_master_key
from privacy.storage import Storage, iso_utc
from privacy.vault import Vault, VaultError
from tests.privacy_helpers import Clock, random_templates

PRIVACY = Path(__file__).resolve().parents[1] / "privacy"
BACKENDS = {"store.py", "pg_store.py"}  # modules allowed to talk to a database driver
DRIVERS = {"sqlite3", "psycopg", "psycopg2", "psycopg_pool"}
SQL_STATEMENT = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|PRAGMA|BEGIN|COMMIT|VACUUM)\b")
INTERFACE = sorted(
    name for name, member in vars(Storage).items() if not name.startswith("_") and inspect.isfunction(member)
)


def test_the_interface_names_every_operation_the_vault_needs():
    assert {"write", "snapshot", "reader", "change_marker", "get_meta", "put_meta", "insert_subject",
            "read_subject", "delete_subjects", "compact", "audit_tail", "insert_audit", "audit_rows"} <= set(INTERFACE)


def backend_classes() -> dict[str, type]:
    classes = {"sqlite": store.SqliteStore}
    try:
        from privacy import pg_store
    except ImportError:  # psycopg not installed: the PostgreSQL backend is optional
        return classes
    return {**classes, "postgresql": pg_store.PgStore}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("name", INTERFACE)
def test_each_backend_implements_each_method_with_the_interfaces_signature(backend, name):
    cls = backend_classes().get(backend) or pytest.skip("psycopg is not installed")
    expected = inspect.signature(getattr(Storage, name))
    actual = inspect.signature(getattr(cls, name))
    assert list(actual.parameters) == list(expected.parameters), name
    assert [p.default for p in actual.parameters.values()] == [p.default for p in expected.parameters.values()]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_each_backend_names_its_driver_errors_and_its_kind(backend):
    cls = backend_classes().get(backend) or pytest.skip("psycopg is not installed")
    assert cls.errors and all(issubclass(e, BaseException) for e in cls.errors)
    assert cls.backend == backend


def _docstrings(tree: ast.AST) -> set[int]:
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }


@pytest.mark.parametrize("module", sorted(p.name for p in PRIVACY.glob("*.py") if p.name not in BACKENDS))
def test_no_privacy_module_but_the_backend_imports_a_database_driver_or_holds_sql(module):
    tree = ast.parse((PRIVACY / module).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & DRIVERS
    docstrings = _docstrings(tree)
    sql = [
        node.value for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
        and SQL_STATEMENT.match(node.value)
    ]
    assert sql == []


def test_times_are_stored_as_fixed_width_utc_text_so_text_order_is_time_order():
    clock = Clock()
    early, late = iso_utc(clock.now), iso_utc(clock.now.replace(year=2031, microsecond=0))
    assert early == "2030-01-01T12:00:00.000000+00:00" and len(early) == len(late) and early < late


def test_driver_errors_reach_callers_as_vault_errors_with_what_to_do(tmp_path):
    key = generate_master_key()
    with Vault.open(tmp_path, master_key=key) as vault:
        vault._conn.execute("PRAGMA query_only = ON")  # the database now refuses writes, as a read-only mount would
        with pytest.raises(VaultError, match="read-only") as error:
            vault.enroll("Ada", {"test_model": random_templates(1)}, "v1", True)
        assert error.value.__cause__ is None and "sqlite3" not in type(error.value).__module__
        vault._conn.execute("PRAGMA query_only = OFF")
        vault.enroll("Ada", {"test_model": random_templates(1)}, "v1", True)
        assert len(vault.subjects("test_model")) == 1
