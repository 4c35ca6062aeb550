// Name, label and annotation validation with the messages kube-apiserver
// gives, and field errors shaped like apimachinery's field.Error, so that
// kubectl users read what they are used to:
//   metadata.name: Invalid value: "Foo": a lowercase RFC 1123 subdomain must ...
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace trellis::apiserver::registry {

// Each returns what is wrong with `value`; empty when valid.
std::vector<std::string> isDns1123Label(std::string_view value);
// Names that only have to be a URL path segment (RBAC objects): not "." or
// "..", no '/' or '%'.
std::vector<std::string> isPathSegmentName(std::string_view value);
std::vector<std::string> isDns1123Subdomain(std::string_view value);
std::vector<std::string> isDns1035Label(std::string_view value);
// A label or annotation key: [prefix/]name, prefix a DNS subdomain.
std::vector<std::string> isQualifiedName(std::string_view value);
std::vector<std::string> isValidLabelValue(std::string_view value);

struct FieldError {
  enum class Type { kInvalid, kRequired, kForbidden, kNotSupported, kDuplicate, kTooLong };
  Type type;
  std::string field;   // "metadata.name", "spec.ports[0].port"
  std::string value;   // the offending value, rendered (quoted when a string)
  std::string detail;

  static FieldError invalid(std::string field, std::string_view value, std::string detail);
  static FieldError required(std::string field, std::string detail);
  static FieldError forbidden(std::string field, std::string detail);

  // "metadata.name: Invalid value: \"Foo\": detail"
  std::string message() const;
  // The StatusCause reason: FieldValueInvalid, FieldValueRequired, ...
  std::string_view reason() const;
};
using FieldErrors = std::vector<FieldError>;

// Adds an Invalid error for every problem `check` finds in `value`.
void appendInvalid(FieldErrors& errs, const std::string& field, std::string_view value,
                   std::vector<std::string> (*check)(std::string_view));

// `ConfigMap "foo" is invalid: <errors>` as kube-apiserver words it.
std::string invalidMessage(std::string_view kind, std::string_view name, const FieldErrors& errs);

// Quotes like Go's %q for the ASCII range (used in messages).
std::string goQuote(std::string_view s);

}  // namespace trellis::apiserver::registry
