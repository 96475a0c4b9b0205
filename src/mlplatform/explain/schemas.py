"""Request and response bodies of the explainability API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

OutputSpace = Literal["probability", "margin", "raw"]
ExplainerKind = Literal["tree", "deep", "gradient", "kernel"]
TextExplainerKind = Literal["partition"]


class FeatureAttribution(BaseModel):
    """One input feature's value and SHAP attribution for one row."""

    name: str = Field(description="Feature (model input column) name.")
    value: float = Field(description="The feature's value in this row, as passed to the model.")
    attribution: float = Field(description="SHAP value: the feature's contribution to output - base_value.")


class RowExplanation(BaseModel):
    """Explanation of one row."""

    prediction: float = Field(description="What the model returns for the row (e.g. fraud probability).")
    output: float = Field(
        description="The model's output in output_space; base_value + sum(attributions) equals it."
    )
    base_value: float = Field(description="SHAP base value: expected output over the background data.")
    attributions: list[FeatureAttribution] = Field(description="One entry per input feature, in input order.")
    top_features: list[FeatureAttribution] = Field(
        description="The top_k features by absolute attribution, largest first."
    )


class ExplainResponse(BaseModel):
    """Per-row SHAP explanations of the model version serving uses."""

    id: str = Field(description="The request's id (echoed, or the X-Request-Id / a generated one).")
    model_name: str = Field(description="Registered model name.")
    model_version: str = Field(description="Registered model version that was explained.")
    explainer: ExplainerKind = Field(description="SHAP algorithm: tree, deep, gradient or kernel.")
    output_space: OutputSpace = Field(
        description="Space of output, base_value and attributions: probability, margin (log-odds) or raw."
    )
    feature_perturbation: str | None = Field(
        None, description="TreeExplainer feature_perturbation (interventional or tree_path_dependent)."
    )
    top_k: int = Field(description="Number of top features returned per row.")
    explanations: list[RowExplanation] = Field(description="One explanation per request row, in order.")


class FeatureImportance(BaseModel):
    """Global importance of one feature."""

    name: str = Field(description="Feature name.")
    mean_abs_attribution: float = Field(description="Mean |SHAP value| over the reference sample.")


class ImportanceResponse(BaseModel):
    """Global feature importance (mean |SHAP|) over the model version's reference sample."""

    model_name: str = Field(description="Registered model name.")
    model_version: str = Field(description="Registered model version.")
    explainer: ExplainerKind = Field(description="SHAP algorithm used.")
    output_space: OutputSpace = Field(description="Space of the attributions averaged.")
    rows: int = Field(description="Reference rows explained.")
    features: list[FeatureImportance] = Field(description="Every feature, largest importance first.")


class TextExplanation(BaseModel):
    """Token attributions of one input text (Partition SHAP over its tokens, one game per output token).

    ``attributions`` has shape (len(output_tokens), len(input_tokens)): ``attributions[j][i]`` is input token
    i's contribution to output token j's log-odds, and for every j
    ``base_values[j] + sum(attributions[j]) == outputs[j]``.
    """

    text_output: str = Field(
        description=(
            "The output text explained: the model's greedy generation for the input, or the request's "
            "parameters.text_output."
        )
    )
    input_tokens: list[str] = Field(
        description="The input text split by the model's tokenizer (each token's text; special tokens by name)."
    )
    output_tokens: list[str] = Field(
        description="The generated tokens (start and end-of-sequence tokens removed)."
    )
    base_values: list[float] = Field(
        description="Per output token: its log-odds when every input token is masked."
    )
    outputs: list[float] = Field(
        description="Per output token: its log-odds given the whole input (teacher forcing on the output)."
    )
    attributions: list[list[float]] = Field(
        description="Per output token, one attribution per input token (in input_tokens order)."
    )
    evaluations: int = Field(description="Model evaluations spent on this text (at most max_evals).")


class TextExplainResponse(BaseModel):
    """Token attributions for a text model (MLflow transformers: text2text-generation or text-generation)."""

    id: str = Field(description="The request's id (echoed, or the X-Request-Id / a generated one).")
    model_name: str = Field(description="Registered model name.")
    model_version: str = Field(description="Registered model version that was explained.")
    explainer: TextExplainerKind = Field(
        description="SHAP algorithm: partition (Owen values over token groups)."
    )
    output_space: Literal["log_odds"] = Field(
        description="Space of outputs, base_values and attributions: log-odds of each output token."
    )
    max_evals: int = Field(
        description="Model evaluations allowed per text (parameters.max_evals or the default)."
    )
    max_tokens: int = Field(description="Most output tokens generated and explained (parameters.max_tokens).")
    explanations: list[TextExplanation] = Field(description="One explanation per input text, in order.")
