"""Model serving: Open Inference Protocol (V2) over registered MLflow models."""
