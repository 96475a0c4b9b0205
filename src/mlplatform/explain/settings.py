"""Settings of the explainability service (env prefix ``EXPLAIN_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from mlplatform.core.settings import ModelListSettings, ServiceSettings
from mlplatform.features.client import FeatureStoreClientSettings


class ExplainSettings(ServiceSettings, ModelListSettings, FeatureStoreClientSettings):
    """Configuration of the explainability service."""

    model_config = SettingsConfigDict(env_prefix="EXPLAIN_", extra="ignore", populate_by_name=True)

    port: int = Field(8083, ge=1, le=65535, description="TCP port the HTTP server listens on.")
    poll_interval_s: float = Field(
        30.0,
        ge=0,
        description=(
            "Seconds between re-resolving model aliases (as serving polls); an alias moved to a new "
            "version gets a new explainer. 0 turns the poller off once every model has loaded."
        ),
    )
    default_top_k: int = Field(
        5, ge=1, le=1000, description="Top-k features returned per row when the request names no top_k."
    )
    max_rows: int = Field(
        1000, ge=1, description="Most rows one explain request may carry; more gets a 422 naming the input."
    )
    background_size: int = Field(
        100,
        ge=1,
        le=10_000,
        description=(
            "Rows sampled from the model version's reference data as the SHAP background set "
            "(DeepExplainer, GradientExplainer; tree ensembles use tree_background_size)."
        ),
    )
    tree_background_size: int = Field(
        50,
        ge=1,
        le=10_000,
        description=(
            "Background rows for interventional TreeExplainer. Its cost grows linearly with this: on two "
            "CPU cores 50 rows explain one row of the 100-tree demo forest in ~7 ms (100 rows: ~13 ms)."
        ),
    )
    importance_sample_size: int = Field(
        500,
        ge=1,
        le=100_000,
        description="Rows of the reference data explained to compute global importance (mean |SHAP|).",
    )
    sample_seed: int = Field(0, description="Seed for sampling background and importance rows.")
    tree_feature_perturbation: Literal["interventional", "tree_path_dependent"] = Field(
        "interventional",
        description=(
            "shap.TreeExplainer feature_perturbation: 'interventional' (background sample, exact "
            "interventional SHAP) or 'tree_path_dependent' (no background, uses training cover)."
        ),
    )
    tree_model_output: Literal["raw", "probability"] = Field(
        "raw",
        description=(
            "shap.TreeExplainer model_output. 'raw' explains what the trees output (probability for "
            "random forests, log-odds margin for gradient boosting); 'probability' converts boosted "
            "margins to probability (needs tree_feature_perturbation=interventional)."
        ),
    )
    torch_explainer: Literal["auto", "deep", "gradient"] = Field(
        "auto",
        description=(
            "Explainer for torch models: 'deep' (shap.DeepExplainer), 'gradient' (shap.GradientExplainer) "
            "or 'auto' (DeepExplainer, falling back to GradientExplainer when DeepExplainer's additivity "
            "check fails on the background sample, e.g. for unsupported operators)."
        ),
    )
    gradient_samples: int = Field(
        200, ge=1, description="nsamples of shap.GradientExplainer (expected-gradients samples per row)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Device for torch explainers: 'auto' uses CUDA when available."
    )
    kernel_fallback: bool = Field(
        True,
        description=(
            "Explain models with no specialised explainer (not a tree ensemble, not torch) with "
            "shap.KernelExplainer. Off: such models get a 422."
        ),
    )
    kernel_background_size: int = Field(
        20, ge=1, le=1000, description="Background rows for KernelExplainer (its cost grows with this)."
    )
    kernel_nsamples: int | Literal["auto"] = Field(
        "auto", description="nsamples of KernelExplainer per row ('auto' is 2*features+2048)."
    )
    # text models (mlplatform.explain.text): Partition SHAP over input tokens
    text_max_evals: int = Field(
        300,
        ge=10,
        le=20_000,
        description=(
            "Model evaluations per text when the request names no parameters.max_evals (SHAP Partition "
            "explainer's max_evals). The cost of an explanation grows linearly with it."
        ),
    )
    text_min_evals: int = Field(
        10, ge=4, description="Smallest parameters.max_evals a text explain request may ask for."
    )
    text_max_evals_limit: int = Field(
        2000, ge=10, description="Largest parameters.max_evals a text explain request may ask for."
    )
    text_max_tokens_limit: int = Field(
        64,
        ge=1,
        description=(
            "Largest parameters.max_tokens (output tokens generated and explained) of a text explain "
            "request; without it the model's own max_new_tokens, capped at this."
        ),
    )
    text_max_rows: int = Field(4, ge=1, description="Most texts one text explain request may carry.")
    text_batch_size: int = Field(
        32, ge=1, description="Masked texts evaluated per model call while explaining a text."
    )
    explainer_cache_size: int = Field(
        8,
        ge=1,
        description="Explainers (one per model version) kept in memory; least recently used go first.",
    )
    # the feature-store client (FeatureStoreClientSettings) with explainability's defaults
    feature_store_timeout_s: float = Field(
        1.0, gt=0, description="Timeout of one online-feature request to the feature store."
    )
    feature_store_retries: int = Field(2, ge=0, description="Retries of a failed online-feature request.")
    feature_deadline_s: float | None = Field(
        2.0, gt=0, description="Total time allowed for the feature lookup of one request (retries included)."
    )

    @model_validator(mode="after")
    def _check_text_evals(self) -> ExplainSettings:
        """The text explain bounds agree with each other: a request may ask for ``max_evals`` in
        ``text_min_evals..text_max_evals_limit``, and ``text_max_evals`` (what a request that names none
        gets) lies in that range too, else such requests would fail with a 422 they did not cause."""
        low, default, high = self.text_min_evals, self.text_max_evals, self.text_max_evals_limit
        if low > high:
            raise ValueError(
                f"EXPLAIN_TEXT_MIN_EVALS ({low}) is above EXPLAIN_TEXT_MAX_EVALS_LIMIT ({high}): "
                "no parameters.max_evals could be asked for"
            )
        if not low <= default <= high:
            raise ValueError(
                f"EXPLAIN_TEXT_MAX_EVALS ({default}) is outside EXPLAIN_TEXT_MIN_EVALS..EXPLAIN_TEXT_MAX_EVALS_LIMIT "
                f"({low}..{high}): every text explain request without parameters.max_evals would be refused"
            )
        return self
