"""Helpers for bench/dns: a client of the API server straight from a
kubeconfig (token or client certificate), and a DNS A-query prober — so that a write
and the first answer that shows it are timed by one clock, without a kubectl
process in between."""
import base64
import http.client
import json
import os
import socket
import ssl
import struct
import tempfile
import time

import yaml  # python3-yaml


class Api:
    def __init__(self, kubeconfig):
        cfg = yaml.safe_load(open(kubeconfig))
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        self.host, self.port = cluster["server"].removeprefix("https://").rsplit(":", 1)
        self.dir = tempfile.mkdtemp(prefix="bench-dns-")
        self.headers = {}
        ca = os.path.join(self.dir, "ca")
        with open(ca, "wb") as f:
            f.write(base64.b64decode(cluster["certificate-authority-data"]))
        self.ctx = ssl.create_default_context(cafile=ca)
        if "token" in user:
            self.headers["Authorization"] = "Bearer " + user["token"]
        else:
            for key, name in (("client-certificate-data", "crt"), ("client-key-data", "key")):
                with open(os.path.join(self.dir, name), "wb") as f:
                    f.write(base64.b64decode(user[key]))
            self.ctx.load_cert_chain(os.path.join(self.dir, "crt"), os.path.join(self.dir, "key"))
        self.conn = http.client.HTTPSConnection(self.host, int(self.port), context=self.ctx)

    def request(self, method, path, body=None, content_type="application/json"):
        data = json.dumps(body).encode() if body is not None else None
        headers = dict(self.headers)
        if data:
            headers["Content-Type"] = content_type
        for attempt in range(3):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                out = r.read()
                break
            except (http.client.RemoteDisconnected, ConnectionError, http.client.CannotSendRequest):
                # The server ends keep-alive connections now and then: reconnect.
                self.conn.close()
                self.conn = http.client.HTTPSConnection(self.host, int(self.port), context=self.ctx)
                if attempt == 2:
                    raise
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {out[:300]!r}")
        return json.loads(out) if out else None


def a_query(name, qid=1):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack(">HH", 1, 1)


def first_a(resp):
    """The first A record's address in a response, or None."""
    an = struct.unpack(">H", resp[6:8])[0]
    if an == 0 or resp[3] & 0xF:
        return None
    p = 12
    while resp[p]:
        p += 1 + resp[p]
    p += 5
    for _ in range(an):
        if resp[p] & 0xC0 == 0xC0:
            p += 2
        else:
            while resp[p]:
                p += 1 + resp[p]
            p += 1
        rtype, _, _, rdlen = struct.unpack(">HHIH", resp[p:p + 10])
        p += 10
        if rtype == 1:
            return socket.inet_ntoa(resp[p:p + 4])
        p += rdlen
    return None


class Prober:
    def __init__(self, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.qid = 0

    def ask(self, name):
        self.qid = (self.qid + 1) & 0xFFFF
        self.sock.send(a_query(name, self.qid))
        try:
            while True:
                r = self.sock.recv(4096)
                if struct.unpack(">H", r[:2])[0] == self.qid:
                    return first_a(r)
        except socket.timeout:
            return None
