// libFuzzer target: whole objects of every served kind through what a
// create and an update do before the store — the decoder's checks
// (quantities, unknown fields), metadata rules, defaults, the kind's
// validation (also as an update against itself and against a pristine
// object of the kind) and the Table columns kubectl reads. The first byte
// picks the kind; the rest is the JSON body. Any answer is fine; an
// exception, a crash or a sanitizer report is not.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <boost/json.hpp>

#include "apiserver-lite/registry/kinds.h"
#include "apiserver-lite/registry/object.h"
#include "apiserver-lite/registry/resources.h"
#include "apiserver-lite/registry/table.h"

using namespace trellis::apiserver::registry;
namespace json = boost::json;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const auto& kinds = servedResources();
  const ResourceInfo& r = kinds[data[0] % kinds.size()];
  auto parsed = parseObject(std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  if (!parsed) return 0;
  json::object obj = std::move(*parsed);
  if (malformedQuantity(r, obj)) return 0;
  (void)unknownFields(r, obj);
  json::object pristine = obj;
  std::string_view ns = r.namespaced ? "default" : "";
  if (prepareCreate(obj, r, ns, "2026-01-01T00:00:00Z", "00000000-0000-0000-0000-000000000001", "abcde")) return 0;
  (void)toTable(r, {obj}, "7", 1767225600);
  json::object updated = obj;
  applyDefaults(r, updated, false);
  (void)validateKind(r, updated, &obj);
  (void)prepareUpdate(pristine, obj, r, ns, objectName(obj));
  applyDefaults(r, pristine, false);
  (void)validateKind(r, pristine, &obj);
  (void)validateKind(r, obj, &pristine);
  return 0;
}
