"""Choosing the delivery of one request from its options and the settings.

Everything that can be wrong with the options (a conflicting mode, a mode the worker is not
configured for, an S3 endpoint that is not allowed) is found here, before anything is
uploaded or queued.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from comfyui.convert import Conversion
from comfyui.delivery.base import Delivery
from comfyui.delivery.inline import InlineDelivery
from comfyui.delivery.reference import ReferenceDelivery
from comfyui.delivery.store import LocalStore
from comfyui.exceptions import ComfyUIError, InvalidRequestError
from comfyui.schemas import OutputOptions, PromptSyncRequest, S3Options
from comfyui.url_fetch import AddressPolicy, BlockedAddressError, check_endpoint, parse_http_url
from config import Settings

if TYPE_CHECKING:
    # Imported where S3 is used: boto3 takes ~90 ms to import, a tenth of the worker's
    # start-up, and only workers that deliver to S3 need it.
    from comfyui.delivery.s3 import S3Delivery, S3Target


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    """The delivery of one request, and the conversion applied to its images."""

    delivery: Delivery
    conversion: Conversion | None


class Deliveries:
    """Builds each request's plan; holds what outlives requests (store, S3 client)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.reference = ReferenceDelivery(settings.public_base_url)
        self.inline = InlineDelivery()
        self.store = LocalStore(settings.store_dir) if settings.store_dir else None
        self._endpoint_policy = AddressPolicy(allow_private=settings.s3_allow_private_endpoints)
        self._configured_s3: S3Delivery | None = None
        self._configured_s3_lock = asyncio.Lock()
        if settings.s3_bucket or settings.output_mode == "s3":
            # Configured for S3: load boto3 now rather than in the first request.
            import comfyui.delivery.s3  # noqa: F401

    async def plan(self, request: PromptSyncRequest) -> DeliveryPlan:
        options = request.output or OutputOptions()
        mode = self._mode(request, options)
        conversion = None
        if options.convert is not None:
            if mode == "reference":
                raise InvalidRequestError(
                    "output.convert needs a mode that delivers bytes (base64, s3 or store); "
                    "reference mode describes the files as ComfyUI wrote them"
                )
            conversion = Conversion(
                options.convert.format, options.convert.quality or self.settings.convert_quality
            )
        delivery: Delivery
        if mode == "base64":
            delivery = self.inline
        elif mode == "store":
            if self.store is None:
                raise InvalidRequestError("store mode is not available: STORE_DIR is not set")
            delivery = self.store
        elif mode == "s3":
            delivery = await self._s3(options.s3)
        else:
            delivery = self.reference
        return DeliveryPlan(delivery, conversion)

    def _mode(self, request: PromptSyncRequest, options: OutputOptions) -> str:
        if request.return_image_base64:
            if options.mode not in (None, "base64"):
                raise InvalidRequestError(
                    f"return_image_base64 asks for base64 delivery but output.mode is "
                    f"{options.mode!r}; give one of them"
                )
            return "base64"
        return options.mode or self.settings.output_mode

    async def _s3(self, options: S3Options | None) -> S3Delivery:
        from comfyui.delivery.s3 import S3Delivery, make_client

        settings = self.settings
        if options is None or not options.model_fields_set - {"presign_expiry"}:
            # The configured target: one client for every request.
            async with self._configured_s3_lock:
                if self._configured_s3 is None:
                    target = _configured_target(settings)
                    client = await asyncio.to_thread(make_client, target)
                    self._configured_s3 = S3Delivery(target, client)
            delivery = self._configured_s3
            if options is not None and options.presign_expiry is not None:
                target = replace(delivery.target, presign_expiry=options.presign_expiry)
                delivery = S3Delivery(target, delivery.client)
            return delivery
        target = await self._request_target(options)
        return S3Delivery(target, await asyncio.to_thread(make_client, target))

    async def _request_target(self, options: S3Options) -> S3Target:
        from comfyui.delivery.s3 import S3Target

        settings = self.settings
        own_keys = options.access_key_id is not None or options.secret_access_key is not None
        if own_keys and (options.access_key_id is None or options.secret_access_key is None):
            raise InvalidRequestError(
                "output.s3 needs both access_key_id and secret_access_key, or neither"
            )
        endpoint = settings.s3_endpoint_url
        if options.endpoint_url is not None:
            if not own_keys:
                # The worker's credentials are never sent to an endpoint a caller chose.
                raise InvalidRequestError(
                    "output.s3.endpoint_url needs the request's own access_key_id and "
                    "secret_access_key"
                )
            endpoint = await self._checked_endpoint(options.endpoint_url)
        bucket = options.bucket or settings.s3_bucket
        if not bucket:
            raise InvalidRequestError("s3 mode needs a bucket: S3_BUCKET or output.s3.bucket")
        secret = options.secret_access_key if own_keys else settings.s3_secret_access_key
        token = options.session_token if own_keys else settings.s3_session_token
        return S3Target(
            bucket=bucket,
            prefix=options.prefix if options.prefix is not None else settings.s3_prefix,
            endpoint_url=endpoint,
            region=options.region or settings.s3_region,
            access_key_id=options.access_key_id if own_keys else settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret else None,
            session_token=token.get_secret_value() if token else None,
            addressing_style=settings.s3_addressing_style,
            presign_expiry=options.presign_expiry or settings.s3_presign_expiry,
        )

    async def _checked_endpoint(self, url: str) -> str:
        try:
            parsed = parse_http_url(url)
            await check_endpoint(parsed.host or "", parsed.port, self._endpoint_policy)
        except ComfyUIError as exc:
            raise InvalidRequestError(f"output.s3.endpoint_url: {exc.detail}") from None
        except BlockedAddressError as exc:
            raise InvalidRequestError(
                f"output.s3.endpoint_url is not allowed: {exc} (S3_ALLOW_PRIVATE_ENDPOINTS)"
            ) from None
        except OSError as exc:
            raise InvalidRequestError(f"output.s3.endpoint_url cannot be resolved: {exc}") from None
        return url.rstrip("/")


def _configured_target(settings: Settings) -> S3Target:
    from comfyui.delivery.s3 import S3Target

    if not settings.s3_bucket:
        raise InvalidRequestError("s3 mode needs a bucket: S3_BUCKET or output.s3.bucket")
    secret, token = settings.s3_secret_access_key, settings.s3_session_token
    return S3Target(
        bucket=settings.s3_bucket,
        prefix=settings.s3_prefix,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=secret.get_secret_value() if secret else None,
        session_token=token.get_secret_value() if token else None,
        addressing_style=settings.s3_addressing_style,
        presign_expiry=settings.s3_presign_expiry,
    )
