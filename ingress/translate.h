// Ingress objects (and the Services, EndpointSlices and TLS Secrets they
// name) → one route table plus the certificates per host. Pure: it reads
// the objects it is given and touches no network, so the controller calls it
// on every change and tests call it directly.
//
// An Ingress is taken whole or skipped whole: a missing Service or port, a
// TLS Secret that is missing or not a valid kubernetes.io/tls pair, an
// unparsable annotation, or a rule that collides with an older Ingress's
// (same host, path type and path) skips it — with a Problem naming why — and
// every other Ingress is unaffected. Ingresses are taken oldest first, so the
// older one keeps a contested rule.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <boost/json/object.hpp>

#include "common/http/tls.h"
#include "ingress/routes.h"

namespace trellis::ingress {

inline constexpr std::string_view kControllerName = "trellis.dev/ingress";
inline constexpr std::string_view kDefaultClassAnnotation = "ingressclass.kubernetes.io/is-default-class";

using Object = std::shared_ptr<const boost::json::object>;

// Which Ingresses are ours: those whose class (spec.ingressClassName, or the
// legacy kubernetes.io/ingress.class annotation) is `className` and that
// IngressClass names our controller — or with no class at all when that
// IngressClass is marked default.
bool admitted(const boost::json::object& ingress, const std::string& className, const boost::json::object* ingressClass);

// The TLS Secrets ("ns/name") an admitted Ingress names.
std::vector<std::string> tlsSecretsOf(const boost::json::object& ingress);

// A parsed certificate, cached by the controller per Secret resourceVersion.
struct Certificate {
  std::shared_ptr<http::ServerCertificate> cert;
  std::string error;  // why the Secret is not usable (cert null)
};

struct Inputs {
  std::vector<Object> ingresses;  // admitted ones only
  std::function<Object(const std::string& nsName)> service;
  std::function<std::vector<Object>(const std::string& nsName)> endpointSlices;  // of one Service
  // The certificate of a TLS Secret, or null when the Secret is not there (yet).
  std::function<std::shared_ptr<const Certificate>(const std::string& nsName)> certificate;
};

struct Problem {
  std::string ingress;  // "ns/name"
  std::string reason;   // Event reason: BadTLSSecret, ServiceNotFound, PortNotFound, RuleConflict, BadAnnotation, UnsupportedBackend
  std::string message;
};

struct Translation {
  std::shared_ptr<const RouteTable> table;
  // Hosts ("app.example.com" or "*.example.com") → certificate, from admitted Ingresses' spec.tls.
  std::map<std::string, std::shared_ptr<http::ServerCertificate>> certificates;
  std::vector<Problem> problems;
  std::set<std::string> served;  // Ingresses ("ns/name") in the table
};

Translation translate(const Inputs& in, uint64_t generation);

// Parses an annotation duration: "30", "30s", "500ms", "2m" → milliseconds.
base::Result<int64_t> parseDurationMs(std::string_view text);
// Parses a body size: "1048576", "8k", "1m", "1g" (binary units) → bytes.
base::Result<uint64_t> parseSize(std::string_view text);

}  // namespace trellis::ingress
