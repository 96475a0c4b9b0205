"""Explainability service: SHAP attributions for exactly the model version that serving uses."""
