"""Settings, read from the environment (WHARF_*) with sensible defaults for a laptop."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from wharf.core.paths import state_home


def _default_database_url() -> str:
    return f"sqlite:///{state_home() / 'wharf.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WHARF_", extra="ignore")

    database_url: str = Field(
        default_factory=_default_database_url,
        description="SQLAlchemy URL: sqlite:///path (default) or postgresql+psycopg://…",
    )
    host: str = "127.0.0.1"
    port: int = 8700
    log_format: str = Field(default="json", pattern="^(json|console)$")
    log_level: str = "info"

    @property
    def sqlite_path(self) -> Path | None:
        prefix = "sqlite:///"
        return (
            Path(self.database_url[len(prefix) :]) if self.database_url.startswith(prefix) else None
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
