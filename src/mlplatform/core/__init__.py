"""Shared building blocks for every service: settings, errors, logging, metrics, tracing, secrets."""
