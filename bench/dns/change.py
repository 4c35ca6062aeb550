#!/usr/bin/python3
"""change.py KUBECONFIG PORT PID N NAMES: waits until trellis-dns (pid PID,
on 127.0.0.1:PORT) answers the last of NAMES Services, prints its RSS, then N
times creates a Service and times how long after the API server's answer to
the create the name is answered (polling every 0.2 ms), and prints median
and max."""
import statistics
import sys
import time

from lib import Api, Prober

kubeconfig, port, pid, n, names = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
api = Api(kubeconfig)
probe = Prober(port)
last = names - 1
want = f"10.96.{last // 250}.{last % 250 + 1}"
deadline = time.time() + 60
while probe.ask(f"svc-{last}.ns-{last % 50}.svc.cluster.local") != want:
    if time.time() > deadline:
        sys.exit(f"change: trellis-dns never answered svc-{last}")
    time.sleep(0.05)
time.sleep(1)
rss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS"))
print(f"trellis-dns RSS with {names} Services: {rss / 1024:.1f} MiB")

lat = []
for k in range(n):
    name, ip = f"change-{k}", f"10.97.0.{k + 1}"
    api.request("POST", "/api/v1/namespaces/ns-0/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"port": 80}]}})
    written = time.perf_counter()
    while probe.ask(f"{name}.ns-0.svc.cluster.local") != ip:
        if time.perf_counter() - written > 5:
            sys.exit(f"change: {name} not answered within 5 s")
        time.sleep(0.0002)
    lat.append((time.perf_counter() - written) * 1000)
print(f"Service written -> answered: median {statistics.median(lat):.2f} ms, max {max(lat):.2f} ms ({n} changes)")
