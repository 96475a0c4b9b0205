"""services/images.txt and services/base.env read the way services/build.sh reads them (shared by the
image and release-workflow checks)."""

from __future__ import annotations

from dataclasses import dataclass

from tests.deploy.conftest import ROOT

SERVICES_DIR = ROOT / "services"
DOCKERFILE = SERVICES_DIR / "Dockerfile"


@dataclass(frozen=True)
class Image:
    """One line of services/images.txt: the build arguments of a service's image(s)."""

    service: str
    port: int
    extra: str
    gpu: bool


def images() -> dict[str, Image]:
    out = {}
    for line in (SERVICES_DIR / "images.txt").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            service, port, extra, gpu = line.split()
            if gpu not in ("yes", "no"):
                raise ValueError(f"services/images.txt: GPU must be yes or no: {line!r}")
            out[service] = Image(service, int(port), extra, gpu == "yes")
    return out


def base_env() -> dict[str, str]:
    pairs = {}
    for line in (SERVICES_DIR / "base.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs
