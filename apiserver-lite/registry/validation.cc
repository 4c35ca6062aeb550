#include "apiserver-lite/registry/validation.h"

#include <fmt/format.h>

namespace trellis::apiserver::registry {
namespace {

constexpr size_t kLabelMax = 63;
constexpr size_t kSubdomainMax = 253;
constexpr const char* kLabelFmt = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
constexpr const char* kSubdomainFmt = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
constexpr const char* k1035Fmt = "[a-z]([-a-z0-9]*[a-z0-9])?";
constexpr const char* kQualifiedFmt = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
constexpr const char* kLabelValueFmt = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";

bool lowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool alnum(char c) { return lowerAlnum(c) || (c >= 'A' && c <= 'Z'); }

// [a-z0-9]([-a-z0-9]*[a-z0-9])?
bool matchLabel(std::string_view s) {
  if (s.empty() || !lowerAlnum(s.front()) || !lowerAlnum(s.back())) return false;
  for (char c : s) {
    if (!lowerAlnum(c) && c != '-') return false;
  }
  return true;
}

bool matchSubdomain(std::string_view s) {
  if (s.empty()) return false;
  size_t start = 0;
  for (;;) {
    size_t dot = s.find('.', start);
    if (!matchLabel(s.substr(start, dot - start))) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

// ([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]
bool matchQualified(std::string_view s) {
  if (s.empty() || !alnum(s.front()) || !alnum(s.back())) return false;
  for (char c : s) {
    if (!alnum(c) && c != '-' && c != '_' && c != '.') return false;
  }
  return true;
}

std::string maxLenError(size_t n) { return fmt::format("must be no more than {} characters", n); }

std::string regexError(std::string msg, const char* format, std::initializer_list<const char*> examples) {
  if (examples.size() == 0) return msg + " (regex used for validation is '" + format + "')";
  msg += " (e.g. ";
  bool first = true;
  for (const char* e : examples) {
    if (!first) msg += " or ";
    first = false;
    msg += "'" + std::string(e) + "', ";
  }
  return msg + "regex used for validation is '" + format + "')";
}

const char* kQualifiedErr =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

}  // namespace

std::vector<std::string> isPathSegmentName(std::string_view v) {
  if (v == "." || v == "..") return {fmt::format("may not be '{}'", v)};
  std::vector<std::string> out;
  if (v.find('/') != std::string_view::npos) out.push_back("may not contain '/'");
  if (v.find('%') != std::string_view::npos) out.push_back("may not contain '%'");
  return out;
}

std::vector<std::string> isDns1123Label(std::string_view v) {
  std::vector<std::string> errs;
  if (v.size() > kLabelMax) errs.push_back(maxLenError(kLabelMax));
  if (!matchLabel(v)) {
    errs.push_back(regexError("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                              "and must start and end with an alphanumeric character",
                              kLabelFmt, {"my-name", "123-abc"}));
  }
  return errs;
}

std::vector<std::string> isDns1123Subdomain(std::string_view v) {
  std::vector<std::string> errs;
  if (v.size() > kSubdomainMax) errs.push_back(maxLenError(kSubdomainMax));
  if (!matchSubdomain(v)) {
    errs.push_back(regexError("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
                              "or '.', and must start and end with an alphanumeric character",
                              kSubdomainFmt, {"example.com"}));
  }
  return errs;
}

std::vector<std::string> isDns1035Label(std::string_view v) {
  std::vector<std::string> errs;
  if (v.size() > kLabelMax) errs.push_back(maxLenError(kLabelMax));
  bool ok = !v.empty() && v.front() >= 'a' && v.front() <= 'z' && matchLabel(v);
  if (!ok) {
    errs.push_back(regexError("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
                              "with an alphabetic character, and end with an alphanumeric character",
                              k1035Fmt, {"my-name", "abc-123"}));
  }
  return errs;
}

std::vector<std::string> isQualifiedName(std::string_view v) {
  std::vector<std::string> errs;
  size_t slash = v.find('/');
  std::string_view name = v;
  if (slash != std::string_view::npos) {
    if (v.find('/', slash + 1) != std::string_view::npos) {
      errs.push_back("a qualified name " + regexError(kQualifiedErr, kQualifiedFmt, {"MyName", "my.name", "123-abc"}) +
                     " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')");
      return errs;
    }
    std::string_view prefix = v.substr(0, slash);
    name = v.substr(slash + 1);
    if (prefix.empty()) {
      errs.push_back("prefix part must be non-empty");
    } else {
      for (std::string& e : isDns1123Subdomain(prefix)) errs.push_back("prefix part " + e);
    }
  }
  if (name.empty()) {
    errs.push_back("name part must be non-empty");
  } else if (name.size() > kLabelMax) {
    errs.push_back("name part " + maxLenError(kLabelMax));
  }
  if (!matchQualified(name)) {
    errs.push_back("name part " + regexError(kQualifiedErr, kQualifiedFmt, {"MyName", "my.name", "123-abc"}));
  }
  return errs;
}

std::vector<std::string> isValidLabelValue(std::string_view v) {
  std::vector<std::string> errs;
  if (v.size() > kLabelMax) errs.push_back(maxLenError(kLabelMax));
  if (!v.empty() && !matchQualified(v)) {
    errs.push_back(regexError("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
                              "or '.', and must start and end with an alphanumeric character",
                              kLabelValueFmt, {"MyValue", "my_value", "12345"}));
  }
  return errs;
}

std::string goQuote(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
        else out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

FieldError FieldError::invalid(std::string field, std::string_view value, std::string detail) {
  return FieldError{Type::kInvalid, std::move(field), goQuote(value), std::move(detail)};
}
FieldError FieldError::required(std::string field, std::string detail) {
  return FieldError{Type::kRequired, std::move(field), "", std::move(detail)};
}
FieldError FieldError::forbidden(std::string field, std::string detail) {
  return FieldError{Type::kForbidden, std::move(field), "", std::move(detail)};
}

std::string_view FieldError::reason() const {
  switch (type) {
    case Type::kInvalid: return "FieldValueInvalid";
    case Type::kRequired: return "FieldValueRequired";
    case Type::kForbidden: return "FieldValueForbidden";
    case Type::kNotSupported: return "FieldValueNotSupported";
    case Type::kDuplicate: return "FieldValueDuplicate";
    case Type::kTooLong: return "FieldValueTooLong";
  }
  return "FieldValueInvalid";
}

std::string FieldError::message() const {
  std::string_view what;
  switch (type) {
    case Type::kInvalid: what = "Invalid value"; break;
    case Type::kRequired: what = "Required value"; break;
    case Type::kForbidden: what = "Forbidden"; break;
    case Type::kNotSupported: what = "Unsupported value"; break;
    case Type::kDuplicate: what = "Duplicate value"; break;
    case Type::kTooLong: what = "Too long"; break;
  }
  std::string out = field + ": " + std::string(what);
  bool withValue = type == Type::kInvalid || type == Type::kNotSupported || type == Type::kDuplicate;
  if (withValue) out += ": " + value;
  if (!detail.empty()) out += ": " + detail;
  return out;
}

void appendInvalid(FieldErrors& errs, const std::string& field, std::string_view value,
                   std::vector<std::string> (*check)(std::string_view)) {
  for (std::string& d : check(value)) errs.push_back(FieldError::invalid(field, value, std::move(d)));
}

std::string invalidMessage(std::string_view kind, std::string_view name, const FieldErrors& errs) {
  std::string out = fmt::format("{} {} is invalid: ", kind, goQuote(name));
  if (errs.size() == 1) return out + errs[0].message();
  out += "[";
  for (size_t i = 0; i < errs.size(); ++i) {
    if (i) out += ", ";
    out += errs[i].message();
  }
  return out + "]";
}

}  // namespace trellis::apiserver::registry
