#include "common/kube/yaml.h"

#include <yaml.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <memory>

namespace trellis::kube {

namespace json = boost::json;

namespace {

bool isTag(const yaml_node_t* n, const char* tag) {
  return n->tag && std::string_view(reinterpret_cast<const char*>(n->tag)) == tag;
}

json::value scalar(const yaml_node_t* n) {
  std::string_view v(reinterpret_cast<const char*>(n->data.scalar.value), n->data.scalar.length);
  bool plain = n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
  if (isTag(n, YAML_STR_TAG) && !plain) return json::string(v);
  if (!plain) return json::string(v);
  if (v.empty() || v == "~" || v == "null" || v == "Null" || v == "NULL") return nullptr;
  if (v == "true" || v == "True" || v == "TRUE") return true;
  if (v == "false" || v == "False" || v == "FALSE") return false;
  std::string s(v);
  char* end = nullptr;
  errno = 0;
  long long i = std::strtoll(s.c_str(), &end, 10);
  bool digits = s.find_first_not_of("+-0123456789") == std::string::npos;
  if (digits && end && *end == '\0' && errno == 0) return static_cast<int64_t>(i);
  if (s.find_first_not_of("+-0123456789.eE") == std::string::npos && s.find_first_of("0123456789") != std::string::npos) {
    errno = 0;
    double d = std::strtod(s.c_str(), &end);
    if (end && *end == '\0' && errno == 0 && std::isfinite(d)) return d;
  }
  return json::string(v);
}

base::Result<json::value> convert(yaml_document_t* doc, yaml_node_t* n, int depth) {
  if (depth > 256) return base::makeError(base::ErrorCode::kInvalidArgument, "YAML nested too deeply");
  switch (n->type) {
    case YAML_SCALAR_NODE:
      return scalar(n);
    case YAML_SEQUENCE_NODE: {
      json::array out;
      for (yaml_node_item_t* it = n->data.sequence.items.start; it < n->data.sequence.items.top; ++it) {
        auto v = convert(doc, yaml_document_get_node(doc, *it), depth + 1);
        if (!v) return v;
        out.push_back(std::move(*v));
      }
      return json::value(std::move(out));
    }
    case YAML_MAPPING_NODE: {
      json::object out;
      for (yaml_node_pair_t* p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; ++p) {
        yaml_node_t* key = yaml_document_get_node(doc, p->key);
        if (!key || key->type != YAML_SCALAR_NODE) {
          return base::makeError(base::ErrorCode::kInvalidArgument, "YAML mapping key at line {} is not a scalar",
                                 key ? key->start_mark.line + 1 : 0);
        }
        auto v = convert(doc, yaml_document_get_node(doc, p->value), depth + 1);
        if (!v) return v;
        out[std::string_view(reinterpret_cast<const char*>(key->data.scalar.value), key->data.scalar.length)] =
            std::move(*v);
      }
      return json::value(std::move(out));
    }
    default:
      return json::value(nullptr);
  }
}

// Reads documents until the end (or the first one when `firstOnly`).
base::Result<std::vector<json::value>> load(std::string_view text, bool firstOnly) {
  yaml_parser_t parser;
  if (!yaml_parser_initialize(&parser)) return base::makeError(base::ErrorCode::kInternal, "yaml_parser_initialize");
  std::unique_ptr<yaml_parser_t, void (*)(yaml_parser_t*)> guard(&parser, yaml_parser_delete);
  yaml_parser_set_input_string(&parser, reinterpret_cast<const unsigned char*>(text.data()), text.size());
  std::vector<json::value> out;
  while (true) {
    yaml_document_t doc;
    if (!yaml_parser_load(&parser, &doc)) {
      return base::makeError(base::ErrorCode::kInvalidArgument, "YAML: {} at line {} column {}",
                             parser.problem ? parser.problem : "malformed", parser.problem_mark.line + 1,
                             parser.problem_mark.column + 1);
    }
    std::unique_ptr<yaml_document_t, void (*)(yaml_document_t*)> docGuard(&doc, yaml_document_delete);
    yaml_node_t* root = yaml_document_get_root_node(&doc);
    if (!root) break;  // end of stream
    auto v = convert(&doc, root, 0);
    if (!v) return std::move(v).error();
    if (!v->is_null()) out.push_back(std::move(*v));
    if (firstOnly) break;
  }
  return out;
}

}  // namespace

base::Result<json::value> parseYaml(std::string_view text) {
  auto docs = load(text, true);
  if (!docs) return std::move(docs).error();
  if (docs->empty()) return json::value(nullptr);
  return std::move(docs->front());
}

base::Result<std::vector<json::value>> parseYamlStream(std::string_view text) { return load(text, false); }

}  // namespace trellis::kube
