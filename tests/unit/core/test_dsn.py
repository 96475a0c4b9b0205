"""Passwords with URL-reserved characters never reach an error message (drift and feature store)."""

from __future__ import annotations

import pytest

from mlplatform.core.dsn import scrub, secret_fragments

# generated passwords: an unescaped "/", "%" or "@" makes parsers split the URL inside the password
URLS = [
    ("postgresql://app:s3cr/etPW0rd@db/app", ["s3cr", "etPW0rd"]),
    ("postgresql://app:p%zzSECRETx@db:5432/app", ["zzSECRETx"]),
    ("postgresql://app:Tr1ck@y@db:5432/app", ["Tr1ck"]),
    ("postgresql://app:plainSecret99@db.example:5432/app", ["plainSecret99"]),
    ("host=db user=app password=kv-Secret-77 dbname=app", ["kv-Secret-77"]),
]


@pytest.mark.parametrize(("dsn", "pieces"), URLS)
def test_scrub_removes_every_piece_of_the_password(dsn, pieces):
    assert all(any(p in f for f in secret_fragments(dsn)) for p in pieces)
    text = f"could not connect: {dsn} / {' '.join(pieces)}"
    out = scrub(text, dsn)
    assert not any(p in out for p in pieces), out
    assert "could not connect" in out


@pytest.mark.parametrize(("dsn", "pieces"), URLS)
def test_drift_store_errors_never_show_the_password(dsn, pieces, tmp_path):
    from mlplatform.drift.store import open_store

    with pytest.raises(RuntimeError) as err:
        open_store(dsn.replace("@db", "@127.0.0.1").replace(":5432", ":1"), tmp_path)
    msg = str(err.value)
    assert msg.startswith("DRIFT_DATABASE_URL") and "\n" not in msg
    assert not any(p in msg for p in pieces), msg


@pytest.mark.parametrize(("dsn", "pieces"), [u for u in URLS if u[0].startswith("postgresql://")])
def test_feature_store_url_errors_never_show_the_password(dsn, pieces):
    from mlplatform.features.database import DatabaseConfigError, DatabaseURL, check_database

    try:
        db = DatabaseURL.parse(dsn)
    except DatabaseConfigError as exc:
        assert not any(p in str(exc) for p in pieces), str(exc)
        return
    with pytest.raises(DatabaseConfigError) as err:
        check_database(
            DatabaseURL.parse(
                dsn.replace("@db.example", "@127.0.0.1").replace("@db", "@127.0.0.1").replace(":5432", ":1")
            ),
            timeout_s=1,
        )
    assert not any(p in str(err.value) for p in pieces), str(err.value)
    assert not any(p in db.redacted() for p in pieces)
