"""A WebSocket upstream for the gateway's tests (the `websockets` package from PyPI).

usage: ws_echo_server.py PORT  (PORT 0: any free port)
  On connect it sends one text message: JSON {"path", "headers"} of the upgrade request it got; then it
  echoes every message back, text as text and binary as binary. Prints "listening PORT" once it accepts connections,
  and the websockets library logs each connection ("connection open").
"""
import asyncio
import json
import logging
import sys

from websockets.asyncio.server import serve

PORT = int(sys.argv[1])
logging.basicConfig(level=logging.INFO)


async def echo(connection):
    request = connection.request
    await connection.send(json.dumps({"path": request.path, "headers": [[k, v] for k, v in request.headers.raw_items()]}))
    async for message in connection:
        await connection.send(message)


async def main():
    async with serve(echo, "127.0.0.1", PORT) as server:
        print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.get_running_loop().create_future()


asyncio.run(main())
