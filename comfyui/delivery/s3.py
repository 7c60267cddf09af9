"""s3 mode: upload to an S3-compatible bucket, answer the object URL and a pre-signed GET URL.

boto3 is blocking, so every call runs in a worker thread. Uploads go from a file on disk
(the colocated output, or a temporary copy streamed from `/view`) in multipart chunks, a
bounded number at once, so memory does not grow with the file.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from comfyui.delivery.base import Delivery, DeliveryContext
from comfyui.exceptions import DeliveryError
from comfyui.outputs import OutputSource, local_file
from comfyui.schemas import FileOutput

_MIB = 1024 * 1024
#: At most 4 parts of 8 MiB in flight per file.
TRANSFER = TransferConfig(
    multipart_threshold=8 * _MIB, multipart_chunksize=8 * _MIB, max_concurrency=4
)


@dataclass(frozen=True, slots=True)
class S3Target:
    """Where and as whom to upload. Credentials left as None come from boto3's usual chain
    (environment, config files, instance role)."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    addressing_style: str = "auto"
    presign_expiry: int = 3600

    def key(self, prompt_id: str, node_id: str, subfolder: str, name: str) -> str:
        folder = "".join(f"{part}/" for part in subfolder.split("/") if part)
        return f"{self.prefix}{prompt_id}/{node_id}/{folder}{name}"


def make_client(target: S3Target) -> Any:
    """A boto3 S3 client for the target (blocking: call it in a thread)."""
    session = boto3.session.Session(
        aws_access_key_id=target.access_key_id,
        aws_secret_access_key=target.secret_access_key,
        aws_session_token=target.session_token,
        region_name=target.region,
    )
    return session.client(
        "s3",
        endpoint_url=target.endpoint_url,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": target.addressing_style},
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=10,
            read_timeout=60,
        ),
    )


class S3Delivery(Delivery):
    mode = "s3"

    def __init__(self, target: S3Target, client: Any) -> None:
        self.target = target
        self.client = client

    async def deliver(
        self, item: FileOutput, source: OutputSource, name: str, context: DeliveryContext
    ) -> None:
        target = self.target
        key = target.key(context.prompt_id, item.node_id, item.subfolder, name)
        try:
            async with local_file(source) as path:
                size = path.stat().st_size
                await asyncio.to_thread(
                    self.client.upload_file,
                    str(path),
                    target.bucket,
                    key,
                    ExtraArgs={"ContentType": item.mime_type},
                    Config=TRANSFER,
                )
            presigned: str = await asyncio.to_thread(
                self.client.generate_presigned_url,
                "get_object",
                Params={"Bucket": target.bucket, "Key": key},
                ExpiresIn=target.presign_expiry,
            )
        except (Boto3Error, BotoCoreError, ClientError) as exc:
            raise DeliveryError(
                f"S3 upload of {key} to bucket {target.bucket} failed: {exc}",
                prompt_id=context.prompt_id,
            ) from None
        expires = datetime.now(UTC) + timedelta(seconds=target.presign_expiry)
        item.size = size
        item.bucket = target.bucket
        item.key = key
        item.url = presigned.split("?", 1)[0]
        item.presigned_url = presigned
        item.expires_at = expires.isoformat()
