"""Settings read once from environment variables into one frozen dataclass."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from facedemo.album import AlbumLimits
from facedemo.detection import DEFAULT_DETECTOR, DetectorError
from facedemo.embedding import ModelUnavailable
from facedemo.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from facedemo.matching import ThresholdError
from facedemo.pipeline import MAX_FACES, Pipeline
from models.registry import DEFAULT_MODEL


class ConfigError(ValueError):
    """A setting in the environment has a value that cannot be used."""


def _default_data_dir(env: Mapping[str, str]) -> Path:
    # Hugging Face Spaces mounts persistent storage at /data; elsewhere keep data beside the app.
    if "FACEDEMO_DATA_DIR" in env:
        return Path(env["FACEDEMO_DATA_DIR"]).expanduser()
    spaces_storage = Path("/data")
    if env.get("SPACE_ID") and spaces_storage.is_dir():
        return spaces_storage
    return Path("data")


def _database_url(env: Mapping[str, str]) -> str | None:
    raw = (env.get("FACEDEMO_DATABASE_URL") or "").strip()
    if not raw:
        return None
    if not raw.startswith(("postgresql://", "postgres://")):
        # Not echoed: a URL may carry a password.
        raise ConfigError("FACEDEMO_DATABASE_URL must be a postgresql:// URL (or unset for SQLite in the data directory)")
    return raw


def _number(env: Mapping[str, str], name: str, default, kind=float, minimum=None, maximum=None):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if maximum is None:
            raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
        raise ConfigError(f"{name}={raw!r} must be between {minimum} and {maximum}")
    return value


@dataclass(frozen=True)
class Config:
    """Everything the app can be told from outside; built once by `from_env` and passed down."""

    data_dir: Path = Path("data")
    master_key: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    retention_days: int = 365
    # Days between master-key rotations the operator commits to; erasure receipts then give the date
    # by which copies of the vault made before an erasure become unreadable. None: no schedule.
    key_rotation_days: int | None = None
    # Decision threshold of the active model, in that model's own unit (see recognition.MODELS);
    # None means the model's calibrated default.
    threshold: float | None = None
    model: str = DEFAULT_MODEL
    # The face detector when a request names none: "mtcnn" or "yunet" (facedemo.detection.DETECTORS).
    detector: str = DEFAULT_DETECTOR
    max_image_bytes: int = DEFAULT_MAX_BYTES
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    max_faces: int = MAX_FACES
    max_enrol_photos: int = 10
    # The shared vault on PostgreSQL (postgresql://...) for several replicas; None: SQLite in data_dir.
    database_url: str | None = field(default=None, repr=False)
    # Albums (facedemo.album): photos, encoded bytes (a zip's members inflated), decoded pixels and
    # seconds of analysis per album; one zip member may inflate at most album_max_ratio times.
    album_max_photos: int = 200
    album_max_bytes: int = 1 << 30
    album_max_pixels: int = 2_000_000_000
    album_max_seconds: float = 600.0
    album_max_ratio: float = 100.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        return cls(
            data_dir=_default_data_dir(env),
            database_url=_database_url(env),
            master_key=env.get("FACEDEMO_MASTER_KEY") or None,
            admin_token=env.get("FACEDEMO_ADMIN_TOKEN") or None,
            retention_days=_number(env, "FACEDEMO_RETENTION_DAYS", 365, int, 1, 36500),
            key_rotation_days=_number(env, "FACEDEMO_KEY_ROTATION_DAYS", None, int, 1, 3650),
            threshold=_number(env, "FACEDEMO_THRESHOLD", None, float, 0.0, 4.0),
            model=env.get("FACEDEMO_MODEL") or cls.model,
            detector=env.get("FACEDEMO_DETECTOR") or cls.detector,
            max_image_bytes=_number(env, "FACEDEMO_MAX_IMAGE_BYTES", cls.max_image_bytes, int, 1024),
            max_image_pixels=_number(env, "FACEDEMO_MAX_IMAGE_PIXELS", cls.max_image_pixels, int, 4096),
            max_faces=_number(env, "FACEDEMO_MAX_FACES", cls.max_faces, int, 1, 1000),
            max_enrol_photos=_number(env, "FACEDEMO_MAX_ENROL_PHOTOS", cls.max_enrol_photos, int, 1, 100),
            album_max_photos=_number(env, "FACEDEMO_ALBUM_MAX_PHOTOS", cls.album_max_photos, int, 1, 10000),
            album_max_bytes=_number(env, "FACEDEMO_ALBUM_MAX_BYTES", cls.album_max_bytes, int, 1024),
            album_max_pixels=_number(env, "FACEDEMO_ALBUM_MAX_PIXELS", cls.album_max_pixels, int, 4096),
            album_max_seconds=_number(env, "FACEDEMO_ALBUM_MAX_SECONDS", cls.album_max_seconds, float, 1.0, 86400.0),
            album_max_ratio=_number(env, "FACEDEMO_ALBUM_MAX_RATIO", cls.album_max_ratio, float, 1.0, 10000.0),
        )

    def pipeline(self) -> Pipeline:
        """The pipeline these settings describe (models load on first use). ConfigError for a
        model or detector that is unknown, or a threshold above the model's ceiling."""
        try:
            return Pipeline(self.model, self.threshold, self.max_faces, self.detector)
        except ThresholdError as exc:
            raise ConfigError(f"FACEDEMO_THRESHOLD: {exc}") from None
        except ModelUnavailable as exc:
            raise ConfigError(f"FACEDEMO_MODEL: {exc}") from None
        except DetectorError as exc:
            raise ConfigError(f"FACEDEMO_DETECTOR: {exc}") from None

    def album_limits(self) -> AlbumLimits:
        """The limits of one album (facedemo.album.AlbumLimits), each photo also within the image limits."""
        return AlbumLimits(
            max_photos=self.album_max_photos, max_bytes=self.album_max_bytes, max_ratio=self.album_max_ratio,
            max_pixels=self.album_max_pixels, max_seconds=self.album_max_seconds,
            image_max_bytes=self.max_image_bytes, image_max_pixels=self.max_image_pixels,
        )
