// Reading Kubernetes objects held as JSON: fields by path, metadata, label
// selectors, owner references. Every reader tolerates missing or mistyped
// fields (an empty answer), since objects come from the server as users
// wrote them.
//
//   std::string_view node = kube::str(pod, {"spec", "nodeName"});
//   if (kube::hasFinalizer(pvc, "kubernetes.io/pvc-protection")) ...
//   auto sel = kube::LabelSelector::parse(*kube::child(svc, {"spec"}), "selector");
#pragma once

#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include "common/base/result.h"

namespace trellis::kube {

using Path = std::initializer_list<std::string_view>;

// The value at `path`, or null when a step is missing or not an object.
const boost::json::value* field(const boost::json::object& obj, Path path);
const boost::json::object* child(const boost::json::object& obj, Path path);
const boost::json::array* array(const boost::json::object& obj, Path path);
// The string at `path` ("" when missing or not a string).
std::string_view str(const boost::json::object& obj, Path path);
// The integer at `path` (`otherwise` when missing or not a number).
int64_t integer(const boost::json::object& obj, Path path, int64_t otherwise = 0);
bool boolean(const boost::json::object& obj, Path path, bool otherwise = false);
// The object at `path`, created (with every step) when missing.
boost::json::object& ensureObject(boost::json::object& obj, Path path);

std::string_view uid(const boost::json::object& obj);
bool beingDeleted(const boost::json::object& obj);  // metadata.deletionTimestamp set
std::map<std::string, std::string> labels(const boost::json::object& obj);
std::string_view annotation(const boost::json::object& obj, std::string_view key);
bool hasFinalizer(const boost::json::object& obj, std::string_view name);

// A JSON merge patch that sets metadata.finalizers to the object's list
// without `name` (with metadata.resourceVersion as a precondition), or
// nullopt when the object does not have it.
std::optional<std::string> removeFinalizerPatch(const boost::json::object& obj, std::string_view name);
// The same with `name` added, or nullopt when the object has it already.
std::optional<std::string> addFinalizerPatch(const boost::json::object& obj, std::string_view name);

struct OwnerReference {
  std::string apiVersion, kind, name, uid;
  bool controller = false;
  bool blockOwnerDeletion = false;
};
std::vector<OwnerReference> ownerReferences(const boost::json::object& obj);
boost::json::object toJson(const OwnerReference& ref);
// The owner reference with controller=true, if any.
std::optional<OwnerReference> controllerOf(const boost::json::object& obj);

// metav1.LabelSelector (matchLabels and matchExpressions with In, NotIn,
// Exists, DoesNotExist) or, with `plain`, a map selector as a Service or
// ReplicationController has. An empty selector matches everything; an
// absent one (isNull) matches nothing.
class LabelSelector {
 public:
  static base::Result<LabelSelector> fromJson(const boost::json::value* v);  // metav1.LabelSelector
  static LabelSelector fromMap(const boost::json::value* v);                // map[string]string
  bool matches(const std::map<std::string, std::string>& labels) const;
  bool isNull() const { return null_; }
  bool empty() const { return !null_ && reqs_.empty(); }

 private:
  struct Requirement {
    std::string key;
    enum class Op { kIn, kNotIn, kExists, kDoesNotExist } op;
    std::vector<std::string> values;
  };
  std::vector<Requirement> reqs_;
  bool null_ = true;
};

// A v1.NodeSelectorTerm list (node affinity, PV node affinity): the node
// matches when any term matches (matchExpressions on labels, matchFields on
// metadata.name). Operators In, NotIn, Exists, DoesNotExist, Gt, Lt.
bool nodeSelectorTermsMatch(const boost::json::array& terms, const boost::json::object& node);

// RFC 3339 in UTC with seconds ("2026-12-07T15:04:05Z"): metav1.Time.
std::string rfc3339Now();
std::string formatRfc3339(int64_t unixSeconds);
// With microseconds ("2026-12-07T15:04:05.123456Z"): metav1.MicroTime.
std::string microTimeNow();
// Parses RFC 3339 (with or without fraction, Z or offset) to Unix seconds.
std::optional<int64_t> parseRfc3339(std::string_view text);

}  // namespace trellis::kube
