"""Worker settings, read once from environment variables (and an optional `.env`)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
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
    output_fetch_concurrency: int = Field(
        8, ge=1, description="Output files fetched from ComfyUI at once per request."
    )

    # Watchdog and websocket reconnection
    comfy_health_interval_s: float = Field(
        60.0, gt=0, description="Seconds between ComfyUI probes while it is healthy."
    )
    comfy_reconnect_max_attempts: int = Field(
        5, ge=1, description="Reconnect attempts with growing delay; then it retries at the cap."
    )
    comfy_reconnect_base_delay_s: float = Field(0.5, gt=0)
    comfy_reconnect_max_delay_s: float = Field(30.0, gt=0)
    warmup_workflow: Path | None = Field(
        None, description="API-format graph run once at start-up; ready only after it succeeds."
    )
    warmup_timeout: float = Field(600.0, gt=0)

    # Backpressure and limits
    max_concurrent_requests: int = Field(
        64, ge=1, description="/prompt_sync requests in flight at once; more get 429."
    )
    max_queue_depth: int = Field(
        256, ge=1, description="Prompts waiting on ComfyUI at most; more submissions get 429."
    )
    max_body_bytes: int = Field(
        50 * 1024 * 1024, ge=1024, description="Largest request body; larger ones get 413."
    )
    max_graph_nodes: int = Field(2000, ge=1, description="Most nodes in one graph; more: 413.")
    shutdown_grace_s: int = Field(
        30, ge=0, description="Seconds in-flight requests may finish after SIGTERM."
    )

    # Access
    api_keys: str = Field(
        "", description="Comma-separated API keys; when set, every route but /health needs one."
    )
    rate_limit_per_minute: int = Field(
        0, ge=0, description="Submissions and /view calls per key (or client) a minute; 0: off."
    )
    cors_origins: str = Field("", description="Comma-separated allowed CORS origins.")

    # Input images of /prompt_sync
    max_input_images: int = Field(16, ge=0, description="Most input images in one request.")
    input_image_max_bytes: int = Field(
        25 * 1024 * 1024, ge=1, description="Largest input image (decoded or downloaded)."
    )
    input_url_timeout: float = Field(
        30.0, gt=0, description="Seconds one input URL download may take, redirects included."
    )
    input_url_max_redirects: int = Field(
        5, ge=0, description="Redirects followed for one input URL."
    )
    allow_private_input_urls: bool = Field(
        False,
        description="Let input URLs reach loopback, link-local and private addresses.",
    )
    input_url_allowed_networks: str = Field(
        "",
        description="Comma-separated CIDRs input URLs may reach even though they are not public.",
    )

    # Outputs of /prompt_sync
    output_mode: Literal["reference", "base64", "s3", "store"] = Field(
        "reference", description="Delivery mode when the request names none."
    )
    comfyui_output_dir: Path | None = Field(
        None, description="ComfyUI's output folder, when colocated: files are read from disk."
    )
    comfyui_temp_dir: Path | None = Field(
        None, description="ComfyUI's temp folder, when colocated: files are read from disk."
    )
    public_base_url: str | None = Field(
        None, description="Base URL of the worker in `url` of reference mode (else the request's)."
    )
    convert_quality: int = Field(
        90, ge=1, le=100, description="webp/jpeg quality when a request asks for no other."
    )
    store_dir: Path | None = Field(None, description="Root of the local store (store mode).")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (AWS if unset).")
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_session_token: SecretStr | None = None
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    s3_presign_expiry: int = Field(
        3600, ge=1, le=604800, description="Seconds a pre-signed GET URL stays valid."
    )
    s3_allow_private_endpoints: bool = Field(
        False,
        description="Let an endpoint_url given in a request reach non-public addresses.",
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

    @field_validator("input_url_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        for network in value.split(","):
            if network.strip():
                ipaddress.ip_network(network.strip(), strict=False)  # ValueError if not a CIDR
        return value

    @field_validator("public_base_url", "s3_endpoint_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.strip().rstrip("/") or None if value is not None else None

    @property
    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def input_url_allowed_network_list(self) -> list[str]:
        return [n.strip() for n in self.input_url_allowed_networks.split(",") if n.strip()]

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
