#!/usr/bin/python3
"""Creates the anchor harness's records as Services: svc-<i> in namespace
ns-<i%50> with ClusterIP 10.96.<i/250>.<i%250+1>, i < NAMES (the API server
must have a service range holding them, e.g. 10.64.0.0/10)."""
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from lib import Api

kubeconfig, names = sys.argv[1], int(sys.argv[2])
api = Api(kubeconfig)
t0 = time.time()
for n in range(min(50, names)):
    api.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns-{n}"}})
local = threading.local()


def create(i):
    # Each thread its own connection: creates are durable, so many at once share commits.
    if not hasattr(local, "api"):
        local.api = Api(kubeconfig)
    ip = f"10.96.{i // 250}.{i % 250 + 1}"
    local.api.request("POST", f"/api/v1/namespaces/ns-{i % 50}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc-{i}"},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})


with ThreadPoolExecutor(max_workers=32) as pool:
    list(pool.map(create, range(names)))
print(f"populate: {names} Services in {time.time() - t0:.1f} s", file=sys.stderr)
