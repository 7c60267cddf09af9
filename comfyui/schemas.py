"""Request and response bodies of the worker's HTTP API (they shape the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_EXAMPLE_GRAPH: dict[str, Any] = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 16711680},
    },
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "sync"}},
}


class PromptSyncRequest(BaseModel):
    """Body of `POST /prompt_sync`."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"prompt": _EXAMPLE_GRAPH}]})

    prompt: dict[str, dict[str, Any]] = Field(
        description="API-format workflow: node id -> {class_type, inputs}."
    )
    client_id: str | None = Field(
        None,
        max_length=256,
        description="Accepted for compatibility and logged; events are routed to the "
        "worker's own ComfyUI connection.",
    )
    extra_data: dict[str, Any] | None = Field(
        None, description="Passed to ComfyUI unchanged (e.g. extra_pnginfo)."
    )
    return_image_base64: bool = Field(
        False, description="Inline every image as base64 in `images[].data`."
    )

    @field_validator("prompt")
    @classmethod
    def _graph_shape(cls, prompt: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not prompt:
            raise ValueError("the graph has no nodes")
        for node_id, node in prompt.items():
            if not isinstance(node.get("class_type"), str) or not node["class_type"]:
                raise ValueError(f"node {node_id!r} has no class_type")
            if not isinstance(node.get("inputs", {}), dict):
                raise ValueError(f"node {node_id!r}: inputs must be an object")
        return prompt


class ImageOutput(BaseModel):
    """One image written by a node (SaveImage output or PreviewImage temp file)."""

    node_id: str
    filename: str
    subfolder: str = ""
    type: str = Field(description="ComfyUI folder: output, temp or input.")
    mime_type: str
    data: str | None = Field(None, description="Base64 bytes, when asked for.")


class PromptSyncResponse(BaseModel):
    """Answer of a successful `POST /prompt_sync`."""

    prompt_id: str
    status: Literal["success"] = "success"
    execution_time: float = Field(
        description="Seconds from execution start (or submission, if the start was not "
        "observed) to completion."
    )
    outputs: dict[str, Any] = Field(description="ComfyUI's history outputs, node id -> ui.")
    images: list[ImageOutput]
    node_errors: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    """The one shape of every error answer."""

    error: str = Field(description="Machine-readable code, e.g. invalid_prompt, timeout.")
    detail: str
    prompt_id: str | None = None
    node_errors: dict[str, Any] = Field(default_factory=dict)
    timestamp: str


class QueuedPrompt(BaseModel):
    """ComfyUI's answer to `POST /prompt`, passed through."""

    model_config = ConfigDict(extra="allow")

    prompt_id: str
    number: float
    node_errors: dict[str, Any] | list[Any]


class HealthResponse(BaseModel):
    """Liveness: the worker process runs. ComfyUI's state is the watchdog's last probe."""

    status: Literal["healthy"] = "healthy"
    comfyui_server: Literal["connected", "disconnected"]
    queue_running: int
    queue_pending: int
    websocket_connected: bool
    last_probe: str | None = Field(description="When the watchdog last asked ComfyUI.")
    timestamp: str


class UnhealthyResponse(BaseModel):
    status: Literal["unhealthy"] = "unhealthy"
    error: str
    timestamp: str


class ReadyResponse(BaseModel):
    """Readiness: ComfyUI answers, the websocket is up, warm-up is done, not shutting down."""

    status: Literal["ready", "not_ready"]
    reasons: list[str] = Field(default_factory=list)
    timestamp: str


class QueueChange(BaseModel):
    """Body of `POST /queue` and `POST /history` (ComfyUI's own shape)."""

    model_config = ConfigDict(extra="allow")

    clear: bool | None = Field(None, description="Wipe all pending prompts (or all history).")
    delete: list[str] | None = Field(None, description="Prompt ids to remove.")


class InterruptRequest(BaseModel):
    """Body of `POST /interrupt`; without `prompt_id` whatever runs is interrupted."""

    model_config = ConfigDict(extra="allow")

    prompt_id: str | None = None
