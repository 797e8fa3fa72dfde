"""The supervisor <-> worker channel: JSON messages framed by a 4-byte big-endian length.

Every message is a JSON object with a ``type``. A worker says ``hello`` and gets ``welcome``
(the resolved settings and the server's recorded state), says ``ready`` once it serves; the
supervisor sends ``op`` (run a control operation here) and gets ``result``; a worker sends
``request`` (run an operation on every worker) and gets ``reply`` with every worker's part.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

from engine.serving.control import Answer, Part

_LENGTH = struct.Struct(">I")
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
"""Statistics and shadow states of many graphs are large, but never this large."""

Message = dict[str, Any]


async def send(writer: asyncio.StreamWriter, message: Message) -> None:
    data = json.dumps(message, separators=(",", ":")).encode()
    writer.write(_LENGTH.pack(len(data)) + data)
    await writer.drain()


async def receive(reader: asyncio.StreamReader) -> Message | None:
    """The next message, or None when the other side closed the channel."""
    try:
        head = await reader.readexactly(_LENGTH.size)
        (size,) = _LENGTH.unpack(head)
        if size > MAX_MESSAGE_BYTES:
            raise ValueError(f"control message of {size} bytes is too large")
        body = await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ValueError("control message is not a JSON object")
    return message


def part_to_json(part: Part) -> Message:
    return {"worker": part.worker, "value": part.value, "status": part.status, "message": part.message}


def part_from_json(data: Message) -> Part:
    return Part(int(data["worker"]), data.get("value"), str(data["status"]), str(data.get("message", "")))


def answer_to_json(answer: Answer) -> Message:
    return {"parts": [part_to_json(p) for p in answer.parts], "missing": list(answer.missing)}


def answer_from_json(data: Message) -> Answer:
    return Answer(
        tuple(part_from_json(p) for p in data["parts"]), tuple(int(w) for w in data.get("missing", ()))
    )
