"""The feature store's database URL: libpq URL -> SQLAlchemy URL and Feast store fields, errors that
name the setting and never the password, and ``feature_store.yaml`` with the SQL registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlplatform.core.secrets import EnvSecretsBackend
from mlplatform.features.database import DatabaseConfigError, DatabaseURL, check_database
from mlplatform.features.settings import FeatureSettings
from mlplatform.features.store import (
    DATABASE_PASSWORD_PLACEHOLDER,
    OFFLINE_STORE_TYPE,
    FeatureRepoPaths,
    OnlineStoreSpec,
    render_feature_store_yaml,
)
from tests.procs import free_port

CNPG_URI = "postgresql://app:p%40ss%2Fw0rd@mlplatform-pg-rw.mlplatform-dev:5432/app"


def test_cnpg_uri_converts_for_sqlalchemy_and_feast() -> None:
    db = DatabaseURL.parse(CNPG_URI)
    assert (db.host, db.port, db.database, db.user, db.password) == (
        "mlplatform-pg-rw.mlplatform-dev",
        5432,
        "app",
        "app",
        "p@ss/w0rd",
    )
    assert db.sqlalchemy_url() == (
        "postgresql+psycopg://app:p%40ss%2Fw0rd@mlplatform-pg-rw.mlplatform-dev:5432/app"
    )
    assert db.offline_store_config() == {
        "host": "mlplatform-pg-rw.mlplatform-dev",
        "port": 5432,
        "database": "app",
        "user": "app",
        "password": "p@ss/w0rd",
        "sslmode": "prefer",
    }
    assert db.redacted() == "app@mlplatform-pg-rw.mlplatform-dev:5432/app"
    assert "p@ss" not in repr(db)


@pytest.mark.parametrize(
    ("url", "sqlalchemy"),
    [
        ("postgres://u@h/d", "postgresql+psycopg://u@h:5432/d"),
        ("postgresql+psycopg://u:pw@h:6543/d", "postgresql+psycopg://u:pw@h:6543/d"),
        (
            "postgresql://u:pw@h:5432/d?sslmode=verify-full&sslrootcert=/ca.crt",
            "postgresql+psycopg://u:pw@h:5432/d?sslmode=verify-full&sslrootcert=%2Fca.crt",
        ),
    ],
)
def test_other_url_forms(url: str, sqlalchemy: str) -> None:
    db = DatabaseURL.parse(url)
    assert db.sqlalchemy_url() == sqlalchemy
    if "sslrootcert" in url:
        cfg = db.offline_store_config()
        assert cfg["sslmode"] == "verify-full" and cfg["sslrootcert_path"] == "/ca.crt"
        assert "sslrootcert=/ca.crt" in db.conninfo()


def test_credentials_in_the_query_string_move_to_their_fields() -> None:
    db = DatabaseURL.parse("postgresql://pg:5432/?dbname=app&user=app&password=s3cret&sslmode=require")
    assert (db.database, db.user, db.password, db.query) == (
        "app",
        "app",
        "s3cret",
        (("sslmode", "require"),),
    )
    assert db.sqlalchemy_url() == "postgresql+psycopg://app:s3cret@pg:5432/app?sslmode=require"
    on_disk = render_feature_store_yaml(FeatureRepoPaths(Path("/tmp/x")), OnlineStoreSpec(), database=db)
    assert "s3cret" not in on_disk


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("mysql://u:secretpw@h/d", "not a PostgreSQL URL"),
        ("u:secretpw@h/d", "not a PostgreSQL URL"),
        ("postgresql://u:secretpw@h:notaport/d", "port"),
        ("postgresql://u:secretpw@h/", "no database"),
        ("postgresql://:secretpw@h/d", "no user"),
        ("postgresql://u:secretpw@h1,h2/d", "several hosts"),
    ],
)
def test_malformed_urls_name_the_setting_not_the_password(url: str, needle: str) -> None:
    with pytest.raises(DatabaseConfigError) as err:
        DatabaseURL.parse(url, setting="FEATURES_DATABASE_URL")
    message = str(err.value)
    assert message.startswith("FEATURES_DATABASE_URL: ") and needle in message
    assert "secretpw" not in message and "\n" not in message


def test_unreachable_database_is_one_line_without_the_password() -> None:
    db = DatabaseURL.parse(f"postgresql://app:topsecret@127.0.0.1:{free_port()}/app")
    with pytest.raises(DatabaseConfigError) as err:
        check_database(db, timeout_s=2)
    message = str(err.value)
    assert message.startswith(
        f"FEATURES_DATABASE_URL: cannot use PostgreSQL at app@127.0.0.1:{db.port}/app: "
    )
    assert "topsecret" not in message and "\n" not in message


def test_yaml_with_database_keeps_the_password_off_disk(tmp_path: Path) -> None:
    db = DatabaseURL.parse(CNPG_URI)
    paths = FeatureRepoPaths(tmp_path)
    on_disk = render_feature_store_yaml(paths, OnlineStoreSpec(), database=db)
    assert "p@ss" not in on_disk and "p%40ss" not in on_disk
    cfg = yaml.safe_load(on_disk)
    assert cfg["registry"]["registry_type"] == "sql"
    assert cfg["registry"]["path"] == (
        f"postgresql+psycopg://app:{DATABASE_PASSWORD_PLACEHOLDER}@mlplatform-pg-rw.mlplatform-dev:5432/app"
    )
    assert cfg["offline_store"]["type"] == OFFLINE_STORE_TYPE
    assert cfg["offline_store"]["password"] == DATABASE_PASSWORD_PLACEHOLDER
    revealed = yaml.safe_load(
        render_feature_store_yaml(paths, OnlineStoreSpec(), database=db, reveal_password=True)
    )
    assert revealed["registry"]["path"] == db.sqlalchemy_url()
    assert revealed["offline_store"]["password"] == "p@ss/w0rd"
    # the embedded default is unchanged
    default = yaml.safe_load(render_feature_store_yaml(paths, OnlineStoreSpec()))
    assert default["registry"]["registry_type"] == "file" and default["offline_store"] == {"type": "file"}


def test_the_feast_config_accepts_the_rendered_database_yaml(tmp_path: Path) -> None:
    from feast import RepoConfig

    db = DatabaseURL.parse(CNPG_URI)
    raw = yaml.safe_load(
        render_feature_store_yaml(
            FeatureRepoPaths(tmp_path), OnlineStoreSpec(), database=db, reveal_password=True
        )
    )
    config = RepoConfig(repo_path=tmp_path, **raw)
    assert config.registry.registry_type == "sql"
    assert config.offline_store.host == db.host and config.offline_store.password == db.password
    assert type(config.offline_store).__name__ == "PlatformPostgreSQLOfflineStoreConfig"


def test_the_data_plane_reads_the_url_through_the_secrets_backend(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from mlplatform.features.dataplane import FeatureDataPlane
    from mlplatform.features.metrics import FeatureMetrics

    def plane(environ: dict[str, str], **kw: object) -> FeatureDataPlane:
        settings = FeatureSettings(_env_file=None, data_dir=tmp_path, **kw)
        return FeatureDataPlane(settings, FeatureMetrics(CollectorRegistry()), EnvSecretsBackend(environ))

    assert plane({}).database() is None
    assert plane({"FEATURES_DATABASE_URL": CNPG_URI}).database() == DatabaseURL.parse(CNPG_URI)
    other = plane({"PG_URI": CNPG_URI}, database_url_secret="PG_URI").database()
    assert other is not None and other.setting == "PG_URI"
    with pytest.raises(
        DatabaseConfigError, match="^FEATURES_DATABASE_URL: not set, and FEATURES_DATABASE_REQUIRED"
    ):
        plane({}, database_required=True).database()
    with pytest.raises(DatabaseConfigError, match="^FEATURES_DATABASE_URL: not a PostgreSQL URL"):
        plane({"FEATURES_DATABASE_URL": "sqlite:///x.db"}).check_database()


def test_create_app_fails_fast_on_an_unreachable_database(tmp_path: Path) -> None:
    from mlplatform.features.app import create_app

    url = f"postgresql://app:topsecret@127.0.0.1:{free_port()}/app"
    settings = FeatureSettings(_env_file=None, data_dir=tmp_path, auth_enabled=False, database_timeout_s=2)
    with pytest.raises(DatabaseConfigError, match="^FEATURES_DATABASE_URL: cannot use PostgreSQL at app@127"):
        create_app(settings, secrets=EnvSecretsBackend({"FEATURES_DATABASE_URL": url}))
