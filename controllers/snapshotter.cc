// csi-snapshotter: the snapshot-controller and csi-snapshotter sidecar in
// one. A VolumeSnapshot of a claim (snapshot.storage.k8s.io/v1), with its
// VolumeSnapshotClass (or the driver's default class), gets a
// VolumeSnapshotContent "snapcontent-<uid>" bound to it; the content gets
// CreateSnapshot "snapshot-<uid>" (so a retry asks for the same one) and
// its status (snapshotHandle, restoreSize, creationTime, readyToUse), which
// the snapshot's status then shows. Deleting the snapshot deletes the
// content under deletionPolicy Delete (and DeleteSnapshot with it); Retain
// keeps both content and snapshot in the driver. Finalizers keep snapshot
// and content until this is done. A claim restores one through
// dataSource (kind VolumeSnapshot) — see the provisioner.
#include <boost/json/serialize.hpp>

#include "common/base/log.h"
#include "common/kube/object.h"
#include "controllers/csi_client.h"
#include "controllers/manager.h"
#include "controllers/storage.h"

namespace trellis::controllers {

namespace {

namespace json = boost::json;
using kube::resources::kPersistentVolumeClaims;
using kube::resources::kPersistentVolumes;
using kube::resources::kSecrets;
using kube::resources::kVolumeSnapshotClasses;
using kube::resources::kVolumeSnapshotContents;
using kube::resources::kVolumeSnapshots;

constexpr const char* kSnapshotFinalizer = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";
constexpr const char* kContentFinalizer = "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";

const base::Logger& log() {
  static base::Logger l("snapshotter");
  return l;
}

std::string nanosToRfc3339(int64_t nanos) {
  time_t secs = static_cast<time_t>(nanos / 1'000'000'000);
  tm t;
  gmtime_r(&secs, &t);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &t);
  return buf;
}

class Snapshotter : public Reconciler {
 public:
  explicit Snapshotter(Context& ctx)
      : Reconciler(ctx, "csi-snapshotter", [this](const std::string& key) { return reconcile(key); }),
        events_(ctx.recorders.get("snapshot-controller")),
        snapshots_(ctx.informers.get(kVolumeSnapshots)),
        contents_(ctx.informers.get(kVolumeSnapshotContents)),
        classes_(ctx.informers.get(kVolumeSnapshotClasses)),
        pvcs_(ctx.informers.get(kPersistentVolumeClaims)),
        pvs_(ctx.informers.get(kPersistentVolumes)) {
    controller_.watch(*snapshots_, [](const json::object& s) { return std::vector<std::string>{"s/" + kube::objectKey(s)}; });
    controller_.watch(*contents_, [](const json::object& c) {
      std::vector<std::string> keys{"c/" + kube::objectKey(c)};
      const json::object* ref = kube::child(c, {"spec", "volumeSnapshotRef"});
      if (ref) keys.push_back("s/" + std::string(kube::str(*ref, {"namespace"})) + "/" + std::string(kube::str(*ref, {"name"})));
      return keys;
    });
  }

 private:
  const std::string& driver() const { return ctx_.options.driverName; }

  base::Status reconcile(const std::string& key) {
    if (key.starts_with("s/")) return syncSnapshot(key.substr(2));
    return syncContent(key.substr(2));
  }

  kube::ObjectPtr classFor(const json::object& vs) {
    std::string_view name = kube::str(vs, {"spec", "volumeSnapshotClassName"});
    if (!name.empty()) return classes_->get(std::string(name));
    for (const kube::ObjectPtr& c : classes_->list()) {
      if (kube::str(*c, {"driver"}) == driver() &&
          kube::annotation(*c, "snapshot.storage.kubernetes.io/is-default-class") == "true") {
        return c;
      }
    }
    return nullptr;
  }

  base::Result<StringMap> secretsOf(const json::object* cls) {
    std::string_view name = cls ? kube::str(*cls, {"parameters", "csi.storage.k8s.io/snapshotter-secret-name"}) : "";
    if (name.empty()) return StringMap{};
    auto s = ctx_.client.get(kSecrets, kube::str(*cls, {"parameters", "csi.storage.k8s.io/snapshotter-secret-namespace"}), name);
    if (!s) return std::move(s).error().wrap("getting the snapshotter secret");
    return secretData(*s);
  }

  base::Status patchFinalizers(const kube::Resource& r, const json::object& obj, std::string_view finalizer, bool present) {
    return setFinalizer(ctx_.client, r, obj, finalizer, present);
  }

  base::Status setError(const kube::Resource& r, const json::object& objIn, const std::string& message) {
    if (kube::str(objIn, {"status", "error", "message"}) == message) return {};
    json::object obj = objIn;
    kube::ensureObject(obj, {"status"})["error"] = json::object{{"time", kube::rfc3339Now()}, {"message", message}};
    auto res = ctx_.client.update(r, std::move(obj), "status");
    return res ? base::Status() : base::Status(res.error());
  }

  // ---- VolumeSnapshot (the snapshot-controller's part)

  base::Status syncSnapshot(const std::string& key) {
    kube::ObjectPtr vs = snapshots_->get(key);
    if (!vs) return {};
    std::string contentName = "snapcontent-" + std::string(kube::uid(*vs));
    kube::ObjectPtr content = contents_->get(contentName);
    if (kube::beingDeleted(*vs)) {
      if (!kube::hasFinalizer(*vs, kSnapshotFinalizer)) return {};
      if (content && kube::str(*content, {"spec", "deletionPolicy"}) == "Delete") {
        if (!kube::beingDeleted(*content)) {
          auto st = ctx_.client.remove(kVolumeSnapshotContents, "", contentName);
          if (!st && st.error().code() != base::ErrorCode::kNotFound) return st;
        }
        return {};  // the content's deletion brings the snapshot back here
      }
      return patchFinalizers(kVolumeSnapshots, *vs, kSnapshotFinalizer, false);
    }
    kube::ObjectPtr cls = classFor(*vs);
    std::string_view claim = kube::str(*vs, {"spec", "source", "persistentVolumeClaimName"});
    if (!cls) {
      if (!kube::str(*vs, {"spec", "volumeSnapshotClassName"}).empty() || !claim.empty()) {
        return setError(kVolumeSnapshots, *vs, "failed to get snapshot class: no such VolumeSnapshotClass, and no default one");
      }
      return {};
    }
    if (kube::str(*cls, {"driver"}) != driver()) return {};
    if (claim.empty()) {
      return setError(kVolumeSnapshots, *vs, "pre-provisioned snapshots (source.volumeSnapshotContentName) are not supported yet");
    }
    if (auto st = patchFinalizers(kVolumeSnapshots, *vs, kSnapshotFinalizer, true); !st) return st;
    if (!content) {
      kube::ObjectPtr pvc = pvcs_->get(std::string(kube::objectNamespace(*vs)) + "/" + std::string(claim));
      kube::ObjectPtr pv = pvc ? pvs_->get(std::string(kube::str(*pvc, {"spec", "volumeName"}))) : nullptr;
      if (!pvc || !pv || kube::annotation(*pvc, kAnnBindCompleted).empty()) {
        std::string msg = fmt::format("the source claim \"{}\" is not bound", claim);
        (void)setError(kVolumeSnapshots, *vs, msg);
        return base::makeError(base::ErrorCode::kFailedPrecondition, "{}", msg);
      }
      if (kube::str(*pv, {"spec", "csi", "driver"}) != driver()) {
        return setError(kVolumeSnapshots, *vs, fmt::format("the source claim \"{}\" is not a {} volume", claim, driver()));
      }
      std::string_view policy = kube::str(*cls, {"deletionPolicy"});
      json::object body{
          {"metadata", json::object{{"name", contentName}, {"finalizers", json::array{kContentFinalizer}}}},
          {"spec", json::object{{"volumeSnapshotRef", json::object{{"kind", "VolumeSnapshot"},
                                                                   {"apiVersion", "snapshot.storage.k8s.io/v1"},
                                                                   {"namespace", kube::objectNamespace(*vs)},
                                                                   {"name", kube::objectName(*vs)},
                                                                   {"uid", kube::uid(*vs)}}},
                                {"source", json::object{{"volumeHandle", kube::str(*pv, {"spec", "csi", "volumeHandle"})}}},
                                {"driver", driver()},
                                {"deletionPolicy", policy.empty() ? "Delete" : policy},
                                {"volumeSnapshotClassName", kube::objectName(*cls)}}}};
      auto res = ctx_.client.create(kVolumeSnapshotContents, "", std::move(body));
      if (!res && res.error().code() != base::ErrorCode::kAlreadyExists) return res.error();
      return {};
    }
    // The snapshot's status follows its content's.
    json::object vsCopy = *vs;
    json::object& st = kube::ensureObject(vsCopy, {"status"});
    st["boundVolumeSnapshotContentName"] = contentName;
    st["readyToUse"] = kube::boolean(*content, {"status", "readyToUse"});
    if (const json::value* size = kube::field(*content, {"status", "restoreSize"}); size && size->is_number()) {
      st["restoreSize"] = bytesQuantity(kube::integer(*content, {"status", "restoreSize"}));
    }
    if (int64_t created = kube::integer(*content, {"status", "creationTime"}); created > 0) {
      st["creationTime"] = nanosToRfc3339(created);
    }
    if (const json::value* err = kube::field(*content, {"status", "error"})) st["error"] = *err;
    else st.erase("error");
    if (kube::field(*vs, {"status"}) && *kube::field(*vs, {"status"}) == json::value(st)) return {};
    bool becameReady = kube::boolean(vsCopy, {"status", "readyToUse"}) && !kube::boolean(*vs, {"status", "readyToUse"});
    auto res = ctx_.client.update(kVolumeSnapshots, std::move(vsCopy), "status");
    if (!res) return res.error();
    if (becameReady) events_.record(*vs, "Normal", "SnapshotReady", fmt::format("Snapshot {} is ready to use.", key));
    return {};
  }

  // ---- VolumeSnapshotContent (the sidecar's part)

  base::Status syncContent(const std::string& name) {
    kube::ObjectPtr content = contents_->get(name);
    if (!content || kube::str(*content, {"spec", "driver"}) != driver()) return {};
    kube::ObjectPtr cls = classes_->get(std::string(kube::str(*content, {"spec", "volumeSnapshotClassName"})));
    std::string handle(kube::str(*content, {"status", "snapshotHandle"}));
    if (kube::beingDeleted(*content)) {
      if (!kube::hasFinalizer(*content, kContentFinalizer)) return {};
      if (kube::str(*content, {"spec", "deletionPolicy"}) == "Delete" && !handle.empty()) {
        auto secrets = secretsOf(cls.get());
        if (!secrets) return secrets.error();
        if (auto st = ctx_.csi->deleteSnapshot(handle, *secrets); !st) {
          (void)setError(kVolumeSnapshotContents, *content, st.error().message());
          return st;
        }
        log().info("deleted snapshot", {{"content", name}, {"handle", handle}});
      }
      return patchFinalizers(kVolumeSnapshotContents, *content, kContentFinalizer, false);
    }
    if (!handle.empty() && kube::boolean(*content, {"status", "readyToUse"})) return {};
    std::string_view source = kube::str(*content, {"spec", "source", "volumeHandle"});
    if (source.empty()) return {};
    StringMap params;
    if (cls) {
      if (const json::object* p = kube::child(*cls, {"parameters"})) {
        for (const auto& [k, v] : *p) {
          if (v.is_string() && !std::string_view(k).starts_with("csi.storage.k8s.io/")) params.emplace(k, v.get_string());
        }
      }
    }
    auto secrets = secretsOf(cls.get());
    if (!secrets) return secrets.error();
    std::string snapName = "snapshot-" + std::string(kube::str(*content, {"spec", "volumeSnapshotRef", "uid"}));
    auto snap = ctx_.csi->createSnapshot(snapName, std::string(source), params, *secrets);
    if (!snap) {
      (void)setError(kVolumeSnapshotContents, *content,
                     fmt::format("failed to take snapshot of the volume {}: {}", source, snap.error().message()));
      return snap.error();
    }
    json::object copy = *content;
    json::object& st = kube::ensureObject(copy, {"status"});
    st["snapshotHandle"] = snap->id;
    st["creationTime"] = snap->creationNanos;
    st["restoreSize"] = snap->sizeBytes;
    st["readyToUse"] = snap->readyToUse;
    st.erase("error");
    auto res = ctx_.client.update(kVolumeSnapshotContents, std::move(copy), "status");
    if (!res) return res.error();
    log().info("snapshot taken", {{"content", name}, {"handle", snap->id}, {"ready", snap->readyToUse}});
    if (!snap->readyToUse) controller_.queue().addAfter("c/" + name, std::chrono::seconds(1));
    return {};
  }

  kube::EventRecorder& events_;
  std::shared_ptr<kube::Informer> snapshots_, contents_, classes_, pvcs_, pvs_;
};

}  // namespace

std::unique_ptr<Runnable> makeSnapshotter(Context& ctx) { return std::make_unique<Snapshotter>(ctx); }

}  // namespace trellis::controllers
