"""The /prompt_sync answer: base64 payloads spliced into the JSON where their tokens stand."""

from __future__ import annotations

import base64
import json

from starlette.responses import StreamingResponse

from comfyui.answer import materialize, render_answer
from comfyui.delivery.base import Encoding, InlinePayloads
from comfyui.schemas import FileOutput, ImageOutput, PromptSyncResponse, TextOutput


async def body_of(response: StreamingResponse) -> bytes:
    chunks = [chunk async for chunk in response.body_iterator]
    assert not any(isinstance(chunk, str) for chunk in chunks)
    return b"".join(chunk for chunk in chunks if not isinstance(chunk, str))


async def test_payloads_are_spliced_into_every_field_that_names_them() -> None:
    inline = InlinePayloads()
    payload = base64.b64encode(b"\x89PNG" + bytes(3 * 1024 * 1024))
    token = inline.add(Encoding([payload[:4096], payload[4096:]]))
    file = FileOutput(
        node_id="3",
        kind="image",
        filename="a.png",
        type="output",
        mime_type="image/png",
        size=10,
        data=token,
    )
    image = ImageOutput(
        node_id="3", filename="a.png", type="output", mime_type="image/png", data=token
    )
    answer = PromptSyncResponse(
        prompt_id="p",
        execution_time=0.1,
        outputs={"9": {"text": [token + " is just text here"]}},
        images=[image],
        files=[file],
        texts=[TextOutput(node_id="9", text="hi")],
    )
    answer._inline = inline.payloads
    response = render_answer(answer)
    assert isinstance(response, StreamingResponse)
    body = await body_of(response)
    assert int(response.headers["content-length"]) == len(body)
    parsed = json.loads(body)
    assert parsed["files"][0]["data"] == parsed["images"][0]["data"] == payload.decode()
    assert parsed == json.loads(materialize(answer).model_dump_json())
    assert answer.files[0].data == token  # the answer itself is left as it was


def test_answers_without_payloads_are_plain_json() -> None:
    answer = PromptSyncResponse(prompt_id="p", execution_time=0, outputs={}, images=[])
    response = render_answer(answer)
    assert json.loads(bytes(response.body))["prompt_id"] == "p"
