"""The plain ASGI lifespan protocol for the test apps that need nothing at startup or shutdown:
`if scope["type"] == "lifespan": return await lifespan(receive, send)`."""


async def lifespan(receive, send):
    """Complete startup, then shutdown, and return."""
    while True:
        m = await receive()
        if m["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif m["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
