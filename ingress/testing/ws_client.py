#!/usr/bin/python3
"""A WebSocket client for the ingress tests (python3-websockets).

ws_client.py HOST PORT COUNT INTERVAL_MS: opens ws://HOST/ws through
127.0.0.1:PORT, sends COUNT messages INTERVAL_MS apart on the one
connection, checks each echo, prints "ok N BACKEND" (or an error, exit 1).
"""
import asyncio
import sys

import websockets


async def main(host, port, count, interval):
    backend = None
    async with websockets.connect(f"ws://{host}/ws", host="127.0.0.1", port=port, open_timeout=5,
                                  ping_interval=None) as ws:
        print("open", flush=True)
        for i in range(count):
            await ws.send(f"m{i}")
            reply = await asyncio.wait_for(ws.recv(), 5)
            name, _, text = reply.partition(": ")
            if text != f"m{i}":
                raise SystemExit(f"echo {i}: got {reply!r}")
            if backend is None:
                backend = name
            elif backend != name:
                raise SystemExit(f"echo {i} came from {name}, not {backend}: the connection was switched")
            await asyncio.sleep(interval / 1000)
    print("ok", count, backend, flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
    except Exception as e:  # noqa: BLE001 - every failure is the test's answer
        print("error", type(e).__name__, e, flush=True)
        sys.exit(1)
