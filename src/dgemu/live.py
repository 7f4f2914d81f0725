"""Live transcription over WebSocket (/v1/listen)."""

from __future__ import annotations

from starlette.websockets import WebSocket

from .common import Emulator


def make_endpoint(emu: Emulator):
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.close(code=1011)

    return endpoint
