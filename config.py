"""Worker settings, read once from environment variables (and an optional `.env`)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the worker. Field names are the environment variable names."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # HTTP server
    server_host: str = "0.0.0.0"
    server_port: int = Field(18188, ge=1, le=65535)

    # The colocated ComfyUI backend: "host:port" or a full http(s) URL.
    comfyui_server_address: str = "127.0.0.1:8188"

    # Waiting
    default_timeout: float = Field(
        300.0, gt=0, description="Seconds /prompt_sync waits by default."
    )
    max_timeout: float = Field(3600.0, gt=0, description="Upper bound for ?timeout=.")

    # ComfyUI connection
    comfyui_request_timeout: float = Field(
        30.0, gt=0, description="Seconds one HTTP request to ComfyUI may take."
    )
    comfyui_poll_interval: float = Field(
        0.25, gt=0, description="Seconds between /history polls while the websocket is down."
    )
    comfyui_unreachable_grace: float = Field(
        2.0, ge=0, description="Seconds ComfyUI may stay unreachable before waiting requests fail."
    )
    comfyui_retry_attempts: int = Field(
        3, ge=1, description="Attempts for a ComfyUI request that is safe to retry."
    )
    comfyui_retry_base_delay: float = Field(0.1, gt=0)
    comfyui_retry_max_delay: float = Field(2.0, gt=0)
    comfyui_ws_heartbeat: float = Field(
        10.0, gt=0, description="Seconds between websocket pings; a silent peer is dropped."
    )
    comfyui_reconnect_base_delay: float = Field(0.5, gt=0)
    comfyui_reconnect_max_delay: float = Field(30.0, gt=0)
    output_fetch_concurrency: int = Field(
        8, ge=1, description="Output files fetched from ComfyUI at once per request."
    )

    # Logging
    log_level: str = "INFO"
    log_output: Literal["console", "json"] = "console"

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("comfyui_server_address")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.strip().rstrip("/")

    @property
    def comfyui_url(self) -> str:
        """Base HTTP URL of ComfyUI."""
        address = self.comfyui_server_address
        return address if "://" in address else f"http://{address}"

    @property
    def comfyui_ws_url(self) -> str:
        """Websocket URL of ComfyUI (without the clientId query)."""
        url = self.comfyui_url
        scheme, rest = url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
