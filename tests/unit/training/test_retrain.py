"""``mlplatform retrain``: the champion/challenger gate against a real SQLite MLflow registry.

Each test gets its own small registry in a tmp dir (never the shared ``demo_registry``): the
same 20 000 generated transactions, features by the pandas join (equal to Feast's, tested in
``tests/unit/features``), and a ``fraud-detector`` champion trained by the pipeline with chosen
hyper-parameters, so the challenger is reliably better (a one-split stump champion), worse (a
stump challenger) or marginally better (depth 4 vs depth 8 forests).
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from mlplatform.cli import app as cli
from mlplatform.core.registry import DEFAULT_ALIAS, mlflow_client
from mlplatform.features import contract as feat
from mlplatform.training import data as data_mod
from mlplatform.training.pipeline import (
    TrainSettings,
    experiment_id,
    load_transactions,
    mlflow_uri,
    prepare_data,
    prepare_registry,
    train_and_register,
)
from mlplatform.training.retrain import (
    AWAITING_PROMOTION,
    CHALLENGER_ALIAS,
    KEPT_CHAMPION,
    PROMOTED,
    TAG_GATE,
    GateResult,
    RetrainSettings,
    challenger_wins,
    run_retraining,
)

MODEL = "fraud-detector"
ROWS = 20_000
SEED = 11
#: The challenger's forest (the retrain settings); champions are built with other settings.
GOOD = {"n_estimators": 20, "max_depth": 8}
STUMP = {"n_estimators": 1, "max_depth": 1}


@pytest.fixture(scope="module")
def raw_transactions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated data set, copied into each test registry's data dir."""
    path = tmp_path_factory.mktemp("retrain-raw") / "transactions.parquet"
    data_mod.generate_transactions(ROWS, SEED).to_parquet(path, index=False)
    return path


def train_settings(data_dir: Path, **overrides: object) -> TrainSettings:
    base: dict[str, object] = {
        "rows": ROWS,
        "seed": SEED,
        "data_dir": data_dir,
        "tracking_uri": None,
        "feature_source": "pandas",
        "materialize": False,
        "epochs": 2,
        "reference_rows": 500,
        **GOOD,
    }
    base.update(overrides)
    return TrainSettings(**base)


def make_registry(
    tmp: Path, raw: Path, champion: dict[str, object] | None, name: str = MODEL
) -> TrainSettings:
    """A tmp data dir holding ``raw`` and a registry whose ``name@champion`` is trained with ``champion``."""
    data_dir = tmp / "data"
    dest = data_mod.raw_path(data_dir)
    dest.parent.mkdir(parents=True)
    shutil.copy(raw, dest)
    settings = train_settings(data_dir)
    if champion is not None:
        champ = train_settings(data_dir, **champion)
        uri, client = prepare_registry(champ)
        with mlflow_uri(uri):
            data = prepare_data(champ, load_transactions(champ))
            train_and_register(
                client,
                champ,
                data,
                name,
                experiment_id=experiment_id(client, champ, uri),
                alias=DEFAULT_ALIAS,
            )
    return settings


def aliases(settings: TrainSettings, name: str = MODEL) -> dict[str, str]:
    client = mlflow_client(settings.resolved_tracking_uri())
    return {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}


def gate_tags(settings: TrainSettings, version: str, name: str = MODEL) -> dict[str, str]:
    client = mlflow_client(settings.resolved_tracking_uri())
    tags = client.get_model_version(name, version).tags
    return {k.removeprefix(TAG_GATE): v for k, v in tags.items() if k.startswith(TAG_GATE)}


# -- a better challenger under promote=auto (shared by the three tests below) ----------------------


class Promoted:
    settings: TrainSettings
    result: GateResult
    fitted_on: list[pd.DataFrame]


@pytest.fixture(scope="module")
def promoted(tmp_path_factory: pytest.TempPathFactory, raw_transactions: Path) -> Promoted:
    """A stump champion, retrained with promote=auto; records the rows the challenger was fitted on."""
    import mlplatform.training.models as models

    out = Promoted()
    out.settings = make_registry(tmp_path_factory.mktemp("retrain-promoted"), raw_transactions, STUMP)
    out.fitted_on = []
    real = models.train_forest

    def spy(x: pd.DataFrame, y: np.ndarray, **kwargs: object):  # noqa: ANN202
        out.fitted_on.append(x.copy())
        return real(x, y, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models, "train_forest", spy)
        out.result = run_retraining(
            RetrainSettings(model=MODEL, promote="auto", from_version="1"), out.settings
        )
    return out


def test_better_challenger_is_promoted_under_auto(promoted: Promoted) -> None:
    r = promoted.result
    assert (r.champion_version, r.challenger_version) == ("1", "2")
    assert r.challenger_scores["roc_auc"] > r.champion_scores["roc_auc"] + 0.1, r
    assert r.challenger_wins and r.decision == PROMOTED and r.champion_after == "2"
    assert aliases(promoted.settings) == {DEFAULT_ALIAS: "2", CHALLENGER_ALIAS: "2"}
    tags = gate_tags(promoted.settings, "2")
    assert tags["decision"] == PROMOTED
    assert tags["champion_version"] == "1"
    assert tags["from_version"] == "1"
    assert tags["metric"] == "roc_auc" and tags["margin"] == "0.0" and tags["promote"] == "auto"
    assert "promote_command" not in tags
    assert any(line.startswith("decision: promoted") for line in r.lines())


def test_gate_scores_in_mlflow_equal_a_recomputation_on_the_window(promoted: Promoted) -> None:
    """Recompute both versions' scores on the latest 20 % by event time, independently of the gate."""
    import mlflow.pyfunc
    from sklearn.metrics import average_precision_score, roc_auc_score

    settings = promoted.settings
    raw = pd.read_parquet(data_mod.raw_path(settings.data_dir))
    frame = feat.build_training_frame(raw).sort_values(feat.TIMESTAMP_COLUMN)
    window = frame.iloc[int(len(frame) * 0.8) :]
    y = window[feat.LABEL_COLUMN].to_numpy()
    x = window[list(feat.MODEL_FEATURES)]
    expected = {}
    with mlflow_uri(settings.resolved_tracking_uri()):
        for role, version in (("champion", "1"), ("challenger", "2")):
            p = np.asarray(mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}").predict(x))[:, 1]
            expected[f"{role}_roc_auc"] = roc_auc_score(y, p)
            expected[f"{role}_pr_auc"] = average_precision_score(y, p)

    client = mlflow_client(settings.resolved_tracking_uri())
    tags = gate_tags(settings, "2")
    run = client.get_run(tags["run_id"])
    for key, value in expected.items():
        assert run.data.metrics[key] == pytest.approx(value, abs=1e-12), key
    assert float(tags["challenger_score"]) == pytest.approx(expected["challenger_roc_auc"], abs=1e-12)
    assert float(tags["champion_score"]) == pytest.approx(expected["champion_roc_auc"], abs=1e-12)
    assert run.data.params["window_rows"] == str(len(window))
    assert run.data.params["champion_version"] == "1" and run.data.params["challenger_version"] == "2"
    assert run.data.tags[f"{TAG_GATE}decision"] == PROMOTED
    assert run.data.metrics["window_fraud_rate"] == pytest.approx(y.mean())
    # the challenger's own training run evaluated the same window
    challenger_run = client.get_run(promoted.result.challenger_run_id)
    assert challenger_run.data.metrics["roc_auc"] == pytest.approx(expected["challenger_roc_auc"], abs=1e-12)


def test_window_is_the_latest_fraction_and_disjoint_from_training_rows(promoted: Promoted) -> None:
    settings, r = promoted.settings, promoted.result
    raw = pd.read_parquet(data_mod.raw_path(settings.data_dir))
    ts = raw[feat.TIMESTAMP_COLUMN]
    start, end = pd.Timestamp(r.window.start), pd.Timestamp(r.window.end)
    assert end == ts.max()
    assert r.window.rows == (ts >= start).sum() == len(raw) - int(len(raw) * 0.8)
    assert r.window.train_rows + r.window.rows == len(raw)
    assert pd.Timestamp(r.window.train_end) < start
    run = mlflow_client(settings.resolved_tracking_uri()).get_run(r.challenger_run_id)
    assert pd.Timestamp(run.data.params["train_end"]) < start
    assert int(run.data.params["train_rows"]) == r.window.train_rows
    # the rows the challenger was actually fitted on contain none of the window's rows
    (fitted,) = promoted.fitted_on
    assert len(fitted) == r.window.train_rows
    frame = feat.build_training_frame(raw)
    key = ["amount", "distance_from_home", "user_mean_amount_7d", "merchant_txn_count_7d"]
    window_keys = set(map(tuple, frame.loc[frame[feat.TIMESTAMP_COLUMN] >= start, key].to_numpy()))
    train_keys = set(map(tuple, frame.loc[frame[feat.TIMESTAMP_COLUMN] < start, key].to_numpy()))
    fitted_keys = set(map(tuple, fitted[key].to_numpy()))
    assert fitted_keys <= train_keys
    assert not fitted_keys & window_keys


# -- other decisions ---------------------------------------------------------------------------------


def test_worse_challenger_is_registered_as_challenger_but_champion_stays(
    tmp_path: Path, raw_transactions: Path
) -> None:
    settings = make_registry(tmp_path, raw_transactions, GOOD)
    stump = settings.model_copy(update=STUMP)
    r = run_retraining(RetrainSettings(model=MODEL, promote="auto"), stump)
    assert r.challenger_scores["roc_auc"] < r.champion_scores["roc_auc"] - 0.1, r
    assert not r.challenger_wins and r.decision == KEPT_CHAMPION and r.champion_after == "1"
    assert aliases(settings) == {DEFAULT_ALIAS: "1", CHALLENGER_ALIAS: "2"}
    tags = gate_tags(settings, "2")
    assert tags["decision"] == KEPT_CHAMPION and tags["challenger_wins"] == "false"
    assert float(tags["challenger_score"]) < float(tags["champion_score"])


def test_margin_turns_a_marginal_win_into_a_loss(tmp_path: Path, raw_transactions: Path) -> None:
    settings = make_registry(tmp_path, raw_transactions, {"n_estimators": 20, "max_depth": 4})
    win = run_retraining(RetrainSettings(model=MODEL, promote="manual", margin=0.0), settings)
    delta = win.challenger_scores["roc_auc"] - win.champion_scores["roc_auc"]
    assert 0 < delta < 0.01, win  # a marginal win
    assert win.decision == AWAITING_PROMOTION
    lose = run_retraining(RetrainSettings(model=MODEL, promote="auto", margin=0.01), settings)
    assert lose.challenger_scores == win.challenger_scores  # same data, same seed: the same model
    assert not lose.challenger_wins and lose.decision == KEPT_CHAMPION
    assert aliases(settings) == {DEFAULT_ALIAS: "1", CHALLENGER_ALIAS: "3"}
    assert gate_tags(settings, "3")["margin"] == "0.01"


def test_manual_never_moves_champion_and_prints_the_promote_command(
    tmp_path: Path, raw_transactions: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlplatform.deploy.render import find_repo_root

    settings = make_registry(tmp_path, raw_transactions, STUMP)
    for key, value in {
        "MLPLATFORM_DATA_DIR": str(settings.data_dir),
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri(),
        "TRAIN_FEATURE_SOURCE": "pandas",
        "TRAIN_MATERIALIZE": "false",
        "TRAIN_SEED": str(SEED),
        "TRAIN_N_ESTIMATORS": str(GOOD["n_estimators"]),
        "TRAIN_MAX_DEPTH": str(GOOD["max_depth"]),
        "TRAIN_REFERENCE_ROWS": "500",
        "MLPLATFORM_RETRAIN_MODEL": MODEL,
        "MLPLATFORM_RETRAIN_FROM_VERSION": "1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLPLATFORM_RETRAIN_PROMOTE", raising=False)  # default: manual
    result = CliRunner().invoke(cli, ["retrain"])
    assert result.exit_code == 0, result.output
    command = "mlplatform promote --env prod --model fraud-detector --version 2"
    assert f"  {command}\n" in result.stdout
    assert "decision: awaiting_promotion" in result.stdout
    assert aliases(settings) == {DEFAULT_ALIAS: "1", CHALLENGER_ALIAS: "2"}
    tags = gate_tags(settings, "2")
    assert tags["decision"] == AWAITING_PROMOTION and tags["challenger_wins"] == "true"
    assert tags["promote"] == "manual" and tags["promote_command"] == command
    # the printed command is a real promotion: run it on a copy of the prod overlay's common.yaml
    values = tmp_path / "repo" / "kubernetes" / "overlays" / "prod" / "values"
    values.mkdir(parents=True)
    shutil.copy(find_repo_root() / "kubernetes/overlays/prod/values/common.yaml", values / "common.yaml")
    promoted = CliRunner().invoke(cli, [*shlex.split(command)[1:], "--root", str(tmp_path / "repo")])
    assert promoted.exit_code == 0, promoted.output
    assert yaml.safe_load((values / "common.yaml").read_text())["models"][MODEL] == "2"


def test_first_model_without_champion_becomes_champion_under_auto(
    tmp_path: Path, raw_transactions: Path
) -> None:
    """The MLP (torch flavour) with no registered model yet: nothing to beat."""
    settings = make_registry(tmp_path, raw_transactions, None)
    r = run_retraining(RetrainSettings(model="fraud-detector-mlp", promote="auto"), settings)
    assert r.champion_version is None and r.champion_scores is None
    assert r.decision == PROMOTED and r.challenger_version == "1"
    assert r.challenger_scores["roc_auc"] > 0.8, r
    assert aliases(settings, "fraud-detector-mlp") == {DEFAULT_ALIAS: "1", CHALLENGER_ALIAS: "1"}
    tags = gate_tags(settings, "1", "fraud-detector-mlp")
    assert tags["champion_version"] == "none" and tags["champion_score"] == "none"


# -- errors and configuration --------------------------------------------------------------------------


def test_missing_model_setting_is_one_line_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLPLATFORM_RETRAIN_MODEL", raising=False)
    result = CliRunner().invoke(cli, ["retrain"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "MLPLATFORM_RETRAIN_MODEL" in result.stderr


def test_unknown_model_is_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["retrain", "--model", "no-such-model"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "'no-such-model' is not one the training pipeline trains" in (
        result.stderr
    )
    assert not (tmp_path / "raw").exists()  # failed before any work


def test_unreachable_registry_is_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connection refused
    monkeypatch.setenv("MLPLATFORM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    result = CliRunner().invoke(cli, ["retrain", "--model", MODEL])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: MLflow registry at http://127.0.0.1:{port} is unreachable")
    assert not (tmp_path / "raw").exists()


def test_cli_options_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlplatform.training.retrain as retrain_mod

    seen: list[RetrainSettings] = []

    def fake(settings: RetrainSettings) -> GateResult:
        seen.append(settings)
        raise retrain_mod.RetrainError("stop here")

    monkeypatch.setattr(retrain_mod, "run_retraining", fake)
    for key, value in {
        "MLPLATFORM_RETRAIN_MODEL": "fraud-detector",
        "MLPLATFORM_RETRAIN_FROM_VERSION": "4",
        "MLPLATFORM_RETRAIN_PROMOTE": "auto",
        "MLPLATFORM_RETRAIN_MARGIN": "0.02",
        "MLPLATFORM_RETRAIN_ENV": "staging",
    }.items():
        monkeypatch.setenv(key, value)
    CliRunner().invoke(cli, ["retrain"])
    CliRunner().invoke(
        cli, ["retrain", "--model", "fraud-detector-mlp", "--promote", "manual", "--margin", "0"]
    )
    env_only, overridden = seen
    assert (env_only.model, env_only.from_version, env_only.promote, env_only.margin, env_only.env) == (
        "fraud-detector",
        "4",
        "auto",
        0.02,
        "staging",
    )
    assert (overridden.model, overridden.promote, overridden.margin, overridden.from_version) == (
        "fraud-detector-mlp",
        "manual",
        0.0,
        "4",
    )
    bad = CliRunner().invoke(cli, ["retrain", "--promote", "sometimes"])
    assert bad.exit_code == 2 and "MLPLATFORM_RETRAIN_PROMOTE" in bad.stderr


@pytest.mark.parametrize(
    ("challenger", "champion", "margin", "wins"),
    [
        (0.90, 0.90, 0.0, True),  # a tie keeps the rule ">=": the newer model wins
        (0.905, 0.90, 0.01, False),  # marginal win, margin makes it a loss
        (0.91, 0.90, 0.01, True),
        (0.80, 0.90, 0.0, False),
        (0.10, None, 0.5, True),  # nothing to beat
    ],
)
def test_gate_rule(challenger: float, champion: float | None, margin: float, wins: bool) -> None:
    assert challenger_wins(challenger, champion, margin) is wins


def test_retrain_settings_defaults_and_docs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPLATFORM_RETRAIN_MODEL", "fraud-detector")
    for key in ("PROMOTE", "MARGIN", "METRIC", "ENV", "FROM_VERSION"):
        monkeypatch.delenv(f"MLPLATFORM_RETRAIN_{key}", raising=False)
    s = RetrainSettings()
    assert (s.promote, s.margin, s.metric, s.env, s.from_version) == ("manual", 0.0, "roc_auc", "prod", None)
    for name, f in RetrainSettings.model_fields.items():
        assert f.description, name


# -- segments: the challenger may not be worse in any segment ------------------------------------------


def test_promoted_challenger_was_checked_per_segment(promoted: Promoted) -> None:
    r = promoted.result
    assert r.segments_checked > 0 and r.segment_regressions == []
    tags = gate_tags(promoted.settings, "2")
    assert tags["segments_checked"] == str(r.segments_checked) and tags["segment_regressions"] == "[]"
    assert any("no segment worse by more than 0.05" in line for line in r.lines())


def test_segment_check_refuses_a_challenger_worse_in_one_segment() -> None:
    """Globally better, much worse for one merchant category: refused; the regression names it."""
    from sklearn.metrics import roc_auc_score

    from mlplatform.training.retrain import segment_check

    rng = np.random.default_rng(3)
    n = 4000
    window = pd.DataFrame(
        {
            "merchant_category": rng.integers(0, 4, n),
            "hour": rng.integers(0, 24, n),
            feat.LABEL_COLUMN: (rng.random(n) < 0.1).astype(np.int64),
        }
    )
    y = window[feat.LABEL_COLUMN].to_numpy()
    champion = np.clip(0.35 * y + rng.random(n) * 0.65, 0, 1)
    challenger = np.clip(0.5 * y + rng.random(n) * 0.5, 0, 1)
    cat2 = (window["merchant_category"] == 2).to_numpy()
    challenger[cat2] = rng.random(cat2.sum())  # no skill at all in category 2
    assert roc_auc_score(y, challenger) > roc_auc_score(y, champion) - 0.1
    regressions, checked = segment_check(RetrainSettings(model=MODEL), window, champion, challenger)
    assert checked == 8  # 4 categories + 4 hour buckets, each with enough positives
    assert [(r["segment"], r["value"]) for r in regressions] == [("merchant_category", "2")]
    r = regressions[0]
    assert r["challenger"] == pytest.approx(roc_auc_score(y[cat2], challenger[cat2]))
    assert r["champion"] == pytest.approx(roc_auc_score(y[cat2], champion[cat2]))
    assert segment_check(RetrainSettings(model=MODEL), window, champion, champion) == ([], 8)
    off = RetrainSettings(model=MODEL, segment_columns="")
    assert segment_check(off, window, champion, challenger) == ([], 0)


def test_a_segment_column_the_data_lacks_is_a_one_line_error(tmp_path: Path, raw_transactions: Path) -> None:
    from mlplatform.training.retrain import RetrainError

    settings = make_registry(tmp_path, raw_transactions, None)
    with pytest.raises(RetrainError, match="'card_colour'"):
        run_retraining(
            RetrainSettings(model=MODEL, segment_columns="merchant_category,card_colour"), settings
        )
    client = mlflow_client(settings.resolved_tracking_uri())
    assert client.search_model_versions(f"name='{MODEL}'") == []  # refused before training
