"""The platform's four services: name, default port, settings class and app factory."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port: int
    settings: str  # "module:Class"
    factory: str  # "module:function" taking settings, returning a FastAPI app

    def load_settings_class(self) -> Any:
        module, _, attr = self.settings.partition(":")
        return getattr(importlib.import_module(module), attr)

    def load_factory(self) -> Any:
        module, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(module), attr)


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec(
            "model-serving",
            8080,
            "mlplatform.serving.settings:ServingSettings",
            "mlplatform.serving.app:create_app",
        ),
        ServiceSpec(
            "feature-store",
            8081,
            "mlplatform.features.settings:FeatureSettings",
            "mlplatform.features.app:create_app",
        ),
        ServiceSpec(
            "drift-detection",
            8082,
            "mlplatform.drift.settings:DriftSettings",
            "mlplatform.drift.app:create_app",
        ),
        ServiceSpec(
            "explainability",
            8083,
            "mlplatform.explain.settings:ExplainSettings",
            "mlplatform.explain.app:create_app",
        ),
    )
}

#: The order ``mlplatform up`` stops the services in, wave by wave: the clients of other services first
#: (serving sends payloads to drift detection and reads features; explainability reads features), so a
#: client's last payloads and lookups reach a peer still running.
STOP_WAVES: tuple[tuple[str, ...], ...] = (
    ("model-serving", "explainability"),
    ("feature-store", "drift-detection"),
)
