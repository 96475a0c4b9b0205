"""mlplatform: Kubernetes-native ML platform (serving, features, drift, explainability)."""

__version__ = "0.1.0"
