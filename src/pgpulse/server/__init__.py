"""The HTTP gateway: SSE, WebSocket, REST and static files (ASGI, Starlette)."""
