#!/usr/bin/python3
"""A WebSocket-over-HTTP/2 client (RFC 8441 extended CONNECT) for the ingress
tests, on python3-h2.

ws_h2_client.py HOST PORT COUNT INTERVAL_MS: h2c (prior knowledge) to
127.0.0.1:PORT, waits for SETTINGS_ENABLE_CONNECT_PROTOCOL, opens
CONNECT :protocol=websocket :path=/ws :authority=HOST, sends COUNT text
messages INTERVAL_MS apart on the one stream, checks each echo ("NAME: text"),
prints "open" once the tunnel is up and "ok COUNT NAME" at the end (or the
error, exit 1).
"""
import os
import socket
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings


def frame(opcode, payload):
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def parse(buf):
    """One unmasked server frame from buf: (opcode, payload, rest) or None."""
    if len(buf) < 2:
        return None
    opcode, n, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, at = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, at = struct.unpack("!Q", buf[2:10])[0], 10
    if len(buf) < at + n:
        return None
    return opcode, buf[at:at + n], buf[at + n:]


def main(host, port, count, interval):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    stream, status, buf, backend, sent, got = None, None, b"", None, 0, 0

    def pump():
        nonlocal status, buf, stream
        data = sock.recv(65536)
        if not data:
            raise SystemExit("connection closed by the proxy")
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.RemoteSettingsChanged) and stream is None:
                if conn.remote_settings.enable_connect_protocol:
                    stream = conn.get_next_available_stream_id()
                    conn.send_headers(stream, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                                               (":path", "/ws"), (":authority", host), ("sec-websocket-version", "13")])
            elif isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers).get(b":status")
            elif isinstance(ev, h2.events.DataReceived):
                buf += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, (h2.events.StreamReset, h2.events.StreamEnded)) and ev.stream_id == stream:
                raise SystemExit(f"stream ended early: {ev}")
        sock.sendall(conn.data_to_send())

    while status is None:
        pump()
    if status != b"200":
        raise SystemExit(f"CONNECT answered {status!r}")
    print("open", flush=True)
    while got < count:
        if sent == got:
            conn.send_data(stream, frame(1, f"m{sent}".encode()))
            sock.sendall(conn.data_to_send())
            sent += 1
        parsed = parse(buf)
        if parsed is None:
            pump()
            continue
        opcode, payload, buf = parsed
        name, _, text = payload.decode().partition(": ")
        if opcode != 1 or text != f"m{got}":
            raise SystemExit(f"echo {got}: got {payload!r}")
        if backend is None:
            backend = name
        elif name != backend:
            raise SystemExit(f"echo {got} came from {name}, not {backend}")
        got += 1
        time.sleep(interval / 1000)
    conn.send_data(stream, frame(8, struct.pack("!H", 1000)), end_stream=True)
    sock.sendall(conn.data_to_send())
    print("ok", count, backend, flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    except BaseException as e:  # noqa: BLE001 - every failure is the test's answer
        if isinstance(e, SystemExit) and e.code in (None, 0):
            raise
        print("error", type(e).__name__, e, flush=True)
        sys.exit(1)
