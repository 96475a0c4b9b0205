"""Feature store: Feast repository, online feature service, client and helpers."""
