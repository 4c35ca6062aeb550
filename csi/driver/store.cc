#include "csi/driver/store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <boost/json.hpp>

#include "common/linux/storage.h"

namespace trellis::csi {

namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

const char* stateName(RecordState s) { return s == RecordState::kReady ? "ready" : "creating"; }
RecordState parseState(const json::object& o) {
  const json::value* v = o.if_contains("state");
  return v && v->is_string() && v->get_string() == "ready" ? RecordState::kReady : RecordState::kCreating;
}

std::string str(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}
int64_t num(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  if (!v) return 0;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64()) return static_cast<int64_t>(v->get_uint64());
  return 0;
}
bool flag(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_bool() && v->get_bool();
}
json::object fromMap(const std::map<std::string, std::string>& m) {
  json::object o;
  for (const auto& [k, v] : m) o[k] = v;
  return o;
}
std::map<std::string, std::string> toMap(const json::object& o, const char* key) {
  std::map<std::string, std::string> m;
  const json::value* v = o.if_contains(key);
  if (v && v->is_object()) {
    for (const auto& kv : v->get_object()) {
      if (kv.value().is_string()) m[std::string(kv.key())] = std::string(kv.value().get_string());
    }
  }
  return m;
}
json::array fromList(const std::vector<std::string>& l) {
  json::array a;
  for (const auto& s : l) a.emplace_back(s);
  return a;
}
std::vector<std::string> toList(const json::object& o, const char* key) {
  std::vector<std::string> l;
  const json::value* v = o.if_contains(key);
  if (v && v->is_array()) {
    for (const auto& e : v->get_array()) {
      if (e.is_string()) l.emplace_back(e.get_string());
    }
  }
  return l;
}

std::optional<json::object> parse(const std::optional<std::string>& text) {
  if (!text) return std::nullopt;
  boost::system::error_code ec;
  json::value v = json::parse(*text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  return v.get_object();
}

json::object encode(const VolumeRecord& r) {
  json::object published;
  for (const auto& [n, ro] : r.published) published[n] = ro;
  return {{"id", r.id}, {"name", r.name}, {"capacity", r.capacity}, {"state", stateName(r.state)},
          {"node", r.node}, {"fsType", r.fsType}, {"blockAccess", r.blockAccess}, {"mountAccess", r.mountAccess},
          {"parameters", fromMap(r.parameters)},
          {"mutableParameters", fromMap(r.mutableParameters)}, {"sourceSnapshot", r.sourceSnapshot},
          {"sourceVolume", r.sourceVolume}, {"published", published}, {"fsGrowPending", r.fsGrowPending},
          {"created", r.createdUnix}};
}
VolumeRecord decodeVolume(const json::object& o) {
  VolumeRecord r;
  r.id = str(o, "id");
  r.name = str(o, "name");
  r.capacity = num(o, "capacity");
  r.state = parseState(o);
  r.node = str(o, "node");
  r.fsType = str(o, "fsType");
  r.blockAccess = flag(o, "blockAccess");
  r.mountAccess = flag(o, "mountAccess");
  r.parameters = toMap(o, "parameters");
  r.mutableParameters = toMap(o, "mutableParameters");
  r.sourceSnapshot = str(o, "sourceSnapshot");
  r.sourceVolume = str(o, "sourceVolume");
  if (const json::value* p = o.if_contains("published"); p && p->is_object()) {
    for (const auto& kv : p->get_object()) r.published[std::string(kv.key())] = kv.value().is_bool() && kv.value().get_bool();
  }
  r.fsGrowPending = flag(o, "fsGrowPending");
  r.createdUnix = num(o, "created");
  return r;
}

json::object encode(const SnapshotRecord& r) {
  return {{"id", r.id}, {"name", r.name}, {"sourceVolume", r.sourceVolume}, {"size", r.size},
          {"state", stateName(r.state)}, {"groupId", r.groupId}, {"created", r.createdUnixNanos},
          {"parameters", fromMap(r.parameters)}};
}
SnapshotRecord decodeSnapshot(const json::object& o) {
  SnapshotRecord r;
  r.id = str(o, "id");
  r.name = str(o, "name");
  r.sourceVolume = str(o, "sourceVolume");
  r.size = num(o, "size");
  r.state = parseState(o);
  r.groupId = str(o, "groupId");
  r.createdUnixNanos = num(o, "created");
  r.parameters = toMap(o, "parameters");
  return r;
}

json::object encode(const GroupRecord& r) {
  return {{"id", r.id}, {"name", r.name}, {"sourceVolumes", fromList(r.sourceVolumes)},
          {"snapshots", fromList(r.snapshots)}, {"state", stateName(r.state)}, {"created", r.createdUnixNanos},
          {"parameters", fromMap(r.parameters)}};
}
GroupRecord decodeGroup(const json::object& o) {
  GroupRecord r;
  r.id = str(o, "id");
  r.name = str(o, "name");
  r.sourceVolumes = toList(o, "sourceVolumes");
  r.snapshots = toList(o, "snapshots");
  r.state = parseState(o);
  r.createdUnixNanos = num(o, "created");
  r.parameters = toMap(o, "parameters");
  return r;
}

json::object encode(const NodeRecord& r) {
  json::array pubs;
  for (const auto& p : r.publishes) {
    pubs.push_back(json::object{{"targetPath", p.targetPath}, {"readonly", p.readonly}, {"state", stateName(p.state)}});
  }
  return {{"volumeId", r.volumeId}, {"stagingPath", r.stagingPath}, {"device", r.device}, {"fsType", r.fsType},
          {"block", r.block}, {"state", stateName(r.state)}, {"publishes", pubs}};
}
NodeRecord decodeNode(const json::object& o) {
  NodeRecord r;
  r.volumeId = str(o, "volumeId");
  r.stagingPath = str(o, "stagingPath");
  r.device = str(o, "device");
  r.fsType = str(o, "fsType");
  r.block = flag(o, "block");
  r.state = parseState(o);
  if (const json::value* p = o.if_contains("publishes"); p && p->is_array()) {
    for (const auto& e : p->get_array()) {
      if (!e.is_object()) continue;
      PublishRecord pr;
      pr.targetPath = str(e.get_object(), "targetPath");
      pr.readonly = flag(e.get_object(), "readonly");
      pr.state = parseState(e.get_object());
      r.publishes.push_back(std::move(pr));
    }
  }
  return r;
}

}  // namespace

base::Result<Store> Store::open(const std::string& poolDir) {
  std::error_code ec;
  fs::create_directories(poolDir, ec);
  if (ec) return base::makeError(base::ErrorCode::kIo, "creating pool directory {}: {}", poolDir, ec.message());
  std::string pool = fs::canonical(poolDir, ec).string();
  if (ec) return base::makeError(base::ErrorCode::kIo, "resolving {}: {}", poolDir, ec.message());
  for (const char* sub : {"volumes", "snapshots", "meta", "meta/volumes", "meta/snapshots", "meta/groups", "meta/node"}) {
    fs::create_directories(pool + "/" + sub, ec);
    if (ec) return base::makeError(base::ErrorCode::kIo, "creating {}/{}: {}", pool, sub, ec.message());
  }
  return Store(pool);
}

std::string Store::path(const char* kind, const std::string& id) const {
  return pool_ + "/meta/" + kind + "/" + id + ".json";
}

std::optional<std::string> Store::read(const char* kind, const std::string& id) const {
  std::ifstream in(path(kind, id));
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> Store::list(const char* kind) const {
  std::vector<std::string> ids;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(pool_ + "/meta/" + kind, ec)) {
    std::string name = e.path().filename().string();
    if (name.size() > 5 && name.ends_with(".json")) ids.push_back(name.substr(0, name.size() - 5));
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

base::Status Store::remove(const char* kind, const std::string& id) {
  if (::unlink(path(kind, id).c_str()) != 0 && errno != ENOENT) {
    return base::Error::fromErrno(errno, "removing record " + id);
  }
  return sys::fsyncDir(pool_ + "/meta/" + kind);
}

// The four record kinds share one shape: a directory of JSON files.
template <typename R, typename Decode>
std::optional<R> Store::get(const char* kind, const std::string& id, Decode decode) const {
  auto o = parse(read(kind, id));
  if (!o) return std::nullopt;
  return decode(*o);
}

template <typename R, typename Decode>
std::vector<R> Store::all(const char* kind, Decode decode) const {
  std::vector<R> out;
  for (const auto& id : list(kind)) {
    if (auto r = get<R>(kind, id, decode)) out.push_back(std::move(*r));
  }
  return out;
}

base::Status Store::write(const char* kind, const std::string& id, const json::object& o) {
  return sys::writeFileAtomic(path(kind, id), json::serialize(o));
}

std::optional<VolumeRecord> Store::volume(const std::string& id) const { return get<VolumeRecord>("volumes", id, decodeVolume); }
std::vector<VolumeRecord> Store::volumes() const { return all<VolumeRecord>("volumes", decodeVolume); }
base::Status Store::put(const VolumeRecord& r) { return write("volumes", r.id, encode(r)); }
base::Status Store::removeVolume(const std::string& id) { return remove("volumes", id); }

std::optional<SnapshotRecord> Store::snapshot(const std::string& id) const { return get<SnapshotRecord>("snapshots", id, decodeSnapshot); }
std::vector<SnapshotRecord> Store::snapshots() const { return all<SnapshotRecord>("snapshots", decodeSnapshot); }
base::Status Store::put(const SnapshotRecord& r) { return write("snapshots", r.id, encode(r)); }
base::Status Store::removeSnapshot(const std::string& id) { return remove("snapshots", id); }

std::optional<GroupRecord> Store::group(const std::string& id) const { return get<GroupRecord>("groups", id, decodeGroup); }
std::vector<GroupRecord> Store::groups() const { return all<GroupRecord>("groups", decodeGroup); }
base::Status Store::put(const GroupRecord& r) { return write("groups", r.id, encode(r)); }
base::Status Store::removeGroup(const std::string& id) { return remove("groups", id); }

std::optional<NodeRecord> Store::node(const std::string& volumeId) const { return get<NodeRecord>("node", volumeId, decodeNode); }
std::vector<NodeRecord> Store::nodes() const { return all<NodeRecord>("node", decodeNode); }
base::Status Store::put(const NodeRecord& r) { return write("node", r.volumeId, encode(r)); }
base::Status Store::removeNode(const std::string& volumeId) { return remove("node", volumeId); }

}  // namespace trellis::csi
