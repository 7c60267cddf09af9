"""Deliver every output file of a prompt: open it, convert it if asked, hand it to the mode."""

from __future__ import annotations

import asyncio

from comfyui.convert import CONVERTIBLE, converted
from comfyui.delivery.base import DeliveryContext
from comfyui.delivery.modes import DeliveryPlan
from comfyui.outputs import EarlySizes, KnownSize, OutputReader, OutputRef
from comfyui.schemas import FileOutput
from comfyui.tasks import gather_or_cancel


async def deliver_outputs(
    refs: list[OutputRef],
    reader: OutputReader,
    plan: DeliveryPlan,
    context: DeliveryContext,
    *,
    concurrency: int,
    early_sizes: EarlySizes | None = None,
) -> list[FileOutput]:
    """One `FileOutput` per file, in the order of `refs`; a few files at a time.
    `early_sizes`: sizes already asked for while the run finished (reference mode)."""
    limit = asyncio.Semaphore(concurrency)

    async def one(ref: OutputRef) -> FileOutput:
        async with limit:
            return await _deliver(ref, reader, plan, context, early_sizes)

    try:
        # The first failure cancels the deliveries still running.
        return await gather_or_cancel(*(one(ref) for ref in refs))
    finally:
        if early_sizes is not None:
            early_sizes.cancel()


async def _deliver(
    ref: OutputRef,
    reader: OutputReader,
    plan: DeliveryPlan,
    context: DeliveryContext,
    early_sizes: EarlySizes | None,
) -> FileOutput:
    item = FileOutput(
        node_id=ref.node_id,
        kind=ref.kind,
        filename=ref.filename,
        subfolder=ref.subfolder,
        type=ref.type,
        mime_type=ref.mime_type,
        size=0,
    )
    conversion = plan.conversion
    if conversion is None and not plan.delivery.reads_bytes:
        # A description needs the size only: asked for without transferring the file.
        if early_sizes is not None:
            size = await early_sizes.size(ref, prompt_id=context.prompt_id)
        else:
            size = await reader.size(
                ref.filename, ref.subfolder, ref.type, prompt_id=context.prompt_id
            )
        await plan.delivery.deliver(item, KnownSize(size), ref.filename, context)
        return item
    async with reader.open(
        ref.filename, ref.subfolder, ref.type, prompt_id=context.prompt_id
    ) as source:
        if conversion is None or ref.mime_type not in CONVERTIBLE:
            await plan.delivery.deliver(item, source, ref.filename, context)
            return item
        async with converted(source, conversion, name=ref.filename) as (result, changed):
            name = ref.filename
            if changed:
                item.mime_type, name = conversion.mime_type, conversion.rename(ref.filename)
            await plan.delivery.deliver(item, result, name, context)
    return item
