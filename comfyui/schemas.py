"""Request and response bodies of the worker's HTTP API (they shape the OpenAPI schema)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator

if TYPE_CHECKING:
    from comfyui.delivery.base import Encoding

_EXAMPLE_GRAPH: dict[str, Any] = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 16711680},
    },
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "sync"}},
}


class InputImage(BaseModel):
    """An image uploaded into ComfyUI's input folder before the graph is queued."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=255,
        description="File name in ComfyUI's input folder, as `LoadImage` nodes name it. A plain "
        "name: no folders, no `..`.",
    )
    image: str = Field(
        min_length=1,
        description="The bytes: base64, a `data:<mime>;base64,` URI, or an http(s) URL.",
    )


class ConvertOptions(BaseModel):
    """Re-encode image outputs (still images only) before delivery."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["webp", "jpeg"]
    quality: int | None = Field(None, ge=1, le=100, description="Default CONVERT_QUALITY.")


class S3Options(BaseModel):
    """Per-request S3 target; each field left out comes from the S3_* settings."""

    model_config = ConfigDict(extra="forbid")

    endpoint_url: str | None = Field(None, description="S3-compatible endpoint; AWS if unset.")
    bucket: str | None = None
    prefix: str | None = Field(None, description="Key prefix, e.g. `renders/`.")
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    presign_expiry: int | None = Field(
        None, ge=1, le=604800, description="Seconds the pre-signed GET URL stays valid."
    )


class OutputOptions(BaseModel):
    """How output files reach the caller."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["reference", "base64", "s3", "store"] | None = Field(
        None,
        description="reference: descriptors and a worker URL; base64: inline data; s3: upload "
        "to a bucket; store: copy into the local store. Default OUTPUT_MODE.",
    )
    convert: ConvertOptions | None = None
    s3: S3Options | None = None
    metadata: dict[str, Any] | None = Field(
        None, description="Free-form caller metadata kept in the store sidecar."
    )


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
        False,
        description="base64 delivery, the compatible way: images carry their bytes in "
        "`images[].data`, other files in `files[].data` (each file's bytes appear once).",
    )
    images: list[InputImage] = Field(
        default_factory=list,
        description="Input images uploaded before the graph is queued (at most MAX_INPUT_IMAGES).",
    )
    output: OutputOptions | None = None

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
    data: str | None = Field(
        None, description="Base64 bytes, when asked for with `return_image_base64`."
    )


class FileOutput(BaseModel):
    """One file written by a node, described once, with what its delivery mode adds."""

    node_id: str
    kind: Literal["image", "video", "audio", "3d", "file"]
    filename: str = Field(description="Name in ComfyUI's folder (before any conversion).")
    subfolder: str = ""
    type: str = Field(description="ComfyUI folder: output, temp or input.")
    mime_type: str = Field(description="Of the delivered bytes (after conversion).")
    size: int = Field(description="Bytes delivered (after conversion).")
    url: str | None = Field(
        None, description="reference: worker URL serving the bytes; s3: the object URL."
    )
    data: str | None = Field(None, description="base64: the bytes.")
    bucket: str | None = Field(None, description="s3: the bucket.")
    key: str | None = Field(None, description="s3: the object key.")
    presigned_url: str | None = Field(None, description="s3: a pre-signed GET URL.")
    expires_at: str | None = Field(None, description="s3: when the pre-signed URL expires.")
    sha256: str | None = Field(None, description="store: content hash.")
    path: str | None = Field(None, description="store: the stored file.")


class TextOutput(BaseModel):
    """One text a node returned (e.g. ShowText's `ui.text`)."""

    node_id: str
    text: str


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
    files: list[FileOutput] = Field(
        default_factory=list,
        description="Every file of every node (images, temp previews, video, audio, 3D, ...).",
    )
    texts: list[TextOutput] = Field(default_factory=list, description="Every text output.")
    node_errors: dict[str, Any] = Field(default_factory=dict)
    #: base64 mode: the encodings `data` fields name by token (see comfyui/answer.py).
    _inline: dict[str, Encoding] = PrivateAttr(default_factory=dict)


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
