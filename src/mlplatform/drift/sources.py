"""Where predictions come from: online traffic (model-serving) or batch scoring, windowed apart.

Drift detection keys records and windows by model and *stream*: the registry version for online
records (``"3"``, unchanged for every sender that predates the ``source`` field) and
``"<version>@batch"`` for rows of ``mlplatform batch-score``. A batch run therefore fills its own
windows, is compared with the same reference (the version's training sample), and shows up in the
API and in every gauge under ``version="3@batch"``, never mixed into the online windows. Batch
windows do not count towards the online retraining episode.
"""

from __future__ import annotations

ONLINE = "online"
BATCH = "batch"
SEPARATOR = "@"


def stream_version(version: str, source: str) -> str:
    """The version key records of ``source`` are stored and windowed under."""
    return version if source == ONLINE else f"{version}{SEPARATOR}{source}"


def registry_version(stream: str) -> str:
    """The registered model version of a stream key (whose reference the stream is compared with)."""
    return stream.split(SEPARATOR, 1)[0]


def source_of(stream: str) -> str:
    """``online`` or ``batch`` for a stream key."""
    return stream.split(SEPARATOR, 1)[1] if SEPARATOR in stream else ONLINE
