# Shared by proxy.sh and extra.sh: the objects a benchmark route needs.
# backend_objects NAME HOST PORT: the trellis IngressClass, a Service NAME
# (port 80 → PORT) and its EndpointSlice with one ready endpoint HOST:PORT,
# as YAML on stdout.
backend_objects() {
    cat <<YAML
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: trellis}
spec: {controller: trellis.dev/ingress}
---
apiVersion: v1
kind: Service
metadata: {name: $1}
spec: {ports: [{name: http, port: 80, targetPort: $3}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $1-1, labels: {kubernetes.io/service-name: $1}}
addressType: IPv4
ports: [{name: http, port: $3, protocol: TCP}]
endpoints: [{addresses: ["$2"], conditions: {ready: true}}]
YAML
}
