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
#include <thread>

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
using kube::resources::kVolumeGroupSnapshotClasses;
using kube::resources::kVolumeGroupSnapshotContents;
using kube::resources::kVolumeGroupSnapshots;
using kube::resources::kVolumeSnapshotClasses;
using kube::resources::kVolumeSnapshotContents;
using kube::resources::kVolumeSnapshots;

constexpr const char* kSnapshotFinalizer = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";
constexpr const char* kContentFinalizer = "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";
constexpr const char* kGroupLabel = "groupsnapshot.storage.k8s.io/volumeGroupSnapshotName";
constexpr const char* kGroupFinalizer = "groupsnapshot.storage.kubernetes.io/volumegroupsnapshot-bound-protection";
constexpr const char* kGroupContentFinalizer = "groupsnapshot.storage.kubernetes.io/volumegroupsnapshotcontent-bound-protection";

const base::Logger& log() {
  static base::Logger l("snapshotter");
  return l;
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
    return controllers::classFor(*classes_, vs, {"spec", "volumeSnapshotClassName"},
                                 "snapshot.storage.kubernetes.io/is-default-class", driver());
  }

  base::Result<StringMap> secretsOf(const json::object* cls) {
    if (!cls) return StringMap{};
    return secretData(ctx_.client, kube::str(*cls, {"parameters", "csi.storage.k8s.io/snapshotter-secret-namespace"}),
                      kube::str(*cls, {"parameters", "csi.storage.k8s.io/snapshotter-secret-name"}), "the snapshotter secret");
  }

  base::Status patchFinalizers(const kube::Resource& r, const json::object& obj, std::string_view finalizer, bool present) {
    return setFinalizer(ctx_.client, r, obj, finalizer, present);
  }

  base::Status setError(const kube::Resource& r, const json::object& obj, const std::string& message) {
    return setStatusError(ctx_.client, r, obj, message);
  }

  // ---- VolumeSnapshot (the snapshot-controller's part)

  base::Status syncSnapshot(const std::string& key) {
    kube::ObjectPtr vs = snapshots_->get(key);
    if (!vs) return {};
    std::string_view preProvisioned = kube::str(*vs, {"spec", "source", "volumeSnapshotContentName"});
    std::string contentName = preProvisioned.empty() ? "snapcontent-" + std::string(kube::uid(*vs)) : std::string(preProvisioned);
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
    if (!preProvisioned.empty()) {
      // Bound to an existing content that names it (a group snapshot's
      // members are made so).
      if (!content) return setError(kVolumeSnapshots, *vs, fmt::format("VolumeSnapshotContent \"{}\" not found", contentName));
      if (kube::str(*content, {"spec", "driver"}) != driver()) return {};
      if (kube::str(*content, {"spec", "volumeSnapshotRef", "name"}) != kube::objectName(*vs) ||
          kube::str(*content, {"spec", "volumeSnapshotRef", "namespace"}) != kube::objectNamespace(*vs)) {
        return setError(kVolumeSnapshots, *vs, fmt::format("VolumeSnapshotContent \"{}\" is bound to another snapshot", contentName));
      }
      if (auto st = patchFinalizers(kVolumeSnapshots, *vs, kSnapshotFinalizer, true); !st) return st;
      return mirrorStatus(key, *vs, *content, contentName);
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
    return mirrorStatus(key, *vs, *content, contentName);
  }

  // The snapshot's status follows its content's.
  base::Status mirrorStatus(const std::string& key, const json::object& vsIn, const json::object& contentIn,
                            const std::string& contentName) {
    const json::object* vs = &vsIn;
    const json::object* content = &contentIn;
    json::object vsCopy = *vs;
    json::object& st = kube::ensureObject(vsCopy, {"status"});
    st["boundVolumeSnapshotContentName"] = contentName;
    st["readyToUse"] = kube::boolean(*content, {"status", "readyToUse"});
    if (const json::value* size = kube::field(*content, {"status", "restoreSize"}); size && size->is_number()) {
      st["restoreSize"] = bytesQuantity(kube::integer(*content, {"status", "restoreSize"}));
    }
    if (int64_t created = kube::integer(*content, {"status", "creationTime"}); created > 0) {
      st["creationTime"] = kube::formatRfc3339(created / 1'000'000'000);
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
      // A group member's snapshot goes with its group (the driver refuses it alone).
      bool member = !kube::str(*content, {"metadata", "labels", kGroupLabel}).empty();
      if (kube::str(*content, {"spec", "deletionPolicy"}) == "Delete" && !handle.empty() && !member) {
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
    if (std::string_view existing = kube::str(*content, {"spec", "source", "snapshotHandle"}); source.empty() && !existing.empty()) {
      if (!handle.empty()) return {};
      // Pre-provisioned: the snapshot exists in the driver already.
      json::object copy = *content;
      json::object& st = kube::ensureObject(copy, {"status"});
      st["snapshotHandle"] = existing;
      st["readyToUse"] = true;
      auto res = ctx_.client.update(kVolumeSnapshotContents, std::move(copy), "status");
      return res ? base::Status() : base::Status(res.error());
    }
    if (source.empty()) return {};
    StringMap params = driverParameters(cls.get());
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

// VolumeGroupSnapshots (groupsnapshot.storage.k8s.io/v1beta1): the claims a
// selector picks get one CreateVolumeGroupSnapshot through the driver's
// GroupController (named after the group's uid), recorded in a
// VolumeGroupSnapshotContent; each member becomes a VolumeSnapshotContent
// with its snapshotHandle and a VolumeSnapshot bound to it (labelled with
// the group, owned by it), restorable as any snapshot. Deleting the group
// deletes its members, then DeleteVolumeGroupSnapshot under Delete.
class GroupSnapshotter : public Reconciler {
 public:
  explicit GroupSnapshotter(Context& ctx)
      : Reconciler(ctx, "csi-group-snapshotter", [this](const std::string& key) { return reconcile(key); }),
        groups_(ctx.informers.get(kVolumeGroupSnapshots)),
        groupContents_(ctx.informers.get(kVolumeGroupSnapshotContents)),
        groupClasses_(ctx.informers.get(kVolumeGroupSnapshotClasses)),
        snapshots_(ctx.informers.get(kVolumeSnapshots)),
        contents_(ctx.informers.get(kVolumeSnapshotContents)),
        pvcs_(ctx.informers.get(kPersistentVolumeClaims)),
        pvs_(ctx.informers.get(kPersistentVolumes)) {
    controller_.watch(*groups_, [](const json::object& g) { return std::vector<std::string>{"g/" + kube::objectKey(g)}; });
    controller_.watch(*groupContents_, [](const json::object& c) {
      std::vector<std::string> keys{"gc/" + kube::objectKey(c)};
      if (const json::object* ref = kube::child(c, {"spec", "volumeGroupSnapshotRef"})) {
        keys.push_back("g/" + std::string(kube::str(*ref, {"namespace"})) + "/" + std::string(kube::str(*ref, {"name"})));
      }
      return keys;
    });
    controller_.watch(*snapshots_, [](const json::object& s) {
      std::string_view group = kube::str(s, {"metadata", "labels", kGroupLabel});
      if (group.empty()) return std::vector<std::string>{};
      return std::vector<std::string>{"g/" + std::string(kube::objectNamespace(s)) + "/" + std::string(group)};
    });
  }

 private:
  const std::string& driver() const { return ctx_.options.driverName; }

  base::Status reconcile(const std::string& key) {
    if (key.starts_with("g/")) return syncGroup(key.substr(2));
    return syncContent(key.substr(3));
  }

  static std::string memberId(std::string_view groupUid, std::string_view volumeHandle) {
    std::string in = std::string(groupUid) + "/" + std::string(volumeHandle);
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : in) h = (h ^ c) * 1099511628211ull;
    return fmt::format("{:016x}", h);
  }

  kube::ObjectPtr classFor(const json::object& g) {
    return controllers::classFor(*groupClasses_, g, {"spec", "volumeGroupSnapshotClassName"},
                                 "groupsnapshot.storage.kubernetes.io/is-default-class", driver());
  }

  base::Status setError(const kube::Resource& r, const json::object& obj, const std::string& message) {
    return setStatusError(ctx_.client, r, obj, message);
  }

  std::vector<kube::ObjectPtr> members(const json::object& g) {
    std::vector<kube::ObjectPtr> out;
    for (const kube::ObjectPtr& s : snapshots_->list()) {
      if (kube::objectNamespace(*s) == kube::objectNamespace(g) &&
          kube::str(*s, {"metadata", "labels", kGroupLabel}) == kube::objectName(g)) {
        out.push_back(s);
      }
    }
    return out;
  }

  base::Status syncGroup(const std::string& key) {
    kube::ObjectPtr g = groups_->get(key);
    if (!g) return {};
    std::string ns(kube::objectNamespace(*g));
    std::string contentName = "groupsnapcontent-" + std::string(kube::uid(*g));
    kube::ObjectPtr content = groupContents_->get(contentName);
    if (kube::beingDeleted(*g)) {
      if (!kube::hasFinalizer(*g, kGroupFinalizer)) return {};
      auto left = members(*g);
      for (const kube::ObjectPtr& m : left) {
        if (kube::beingDeleted(*m)) continue;
        auto st = ctx_.client.remove(kVolumeSnapshots, ns, kube::objectName(*m));
        if (!st && st.error().code() != base::ErrorCode::kNotFound) return st;
      }
      if (!left.empty()) return {};  // their deletion brings the group back here
      if (content) {
        if (kube::str(*content, {"spec", "deletionPolicy"}) == "Delete" && !kube::beingDeleted(*content)) {
          auto st = ctx_.client.remove(kVolumeGroupSnapshotContents, "", contentName);
          if (!st && st.error().code() != base::ErrorCode::kNotFound) return st;
        }
        if (kube::str(*content, {"spec", "deletionPolicy"}) == "Delete") return {};
      }
      return setFinalizer(ctx_.client, kVolumeGroupSnapshots, *g, kGroupFinalizer, false);
    }
    kube::ObjectPtr cls = classFor(*g);
    if (!cls) return setError(kVolumeGroupSnapshots, *g, "failed to get group snapshot class: none named, and no default one");
    if (kube::str(*cls, {"driver"}) != driver()) return {};
    if (auto st = setFinalizer(ctx_.client, kVolumeGroupSnapshots, *g, kGroupFinalizer, true); !st) return st;
    if (!content) {
      auto sel = kube::LabelSelector::fromJson(kube::field(*g, {"spec", "source", "selector"}));
      if (!sel) return setError(kVolumeGroupSnapshots, *g, sel.error().message());
      json::array handles;
      for (const kube::ObjectPtr& pvc : pvcs_->list()) {
        if (kube::objectNamespace(*pvc) != ns || !sel->matches(kube::labels(*pvc))) continue;
        kube::ObjectPtr pv = pvs_->get(std::string(kube::str(*pvc, {"spec", "volumeName"})));
        if (!pv || kube::annotation(*pvc, kAnnBindCompleted).empty() || kube::str(*pv, {"spec", "csi", "driver"}) != driver()) {
          return setError(kVolumeGroupSnapshots, *g, fmt::format("claim \"{}\" is not a bound {} volume", kube::objectName(*pvc), driver()));
        }
        handles.push_back(json::string(kube::str(*pv, {"spec", "csi", "volumeHandle"})));
      }
      if (handles.empty()) return setError(kVolumeGroupSnapshots, *g, "no claims match the selector");
      std::string_view policy = kube::str(*cls, {"deletionPolicy"});
      json::object body{
          {"metadata", json::object{{"name", contentName}, {"finalizers", json::array{kGroupContentFinalizer}}}},
          {"spec", json::object{{"volumeGroupSnapshotRef", json::object{{"kind", "VolumeGroupSnapshot"},
                                                                        {"apiVersion", "groupsnapshot.storage.k8s.io/v1beta1"},
                                                                        {"namespace", ns}, {"name", kube::objectName(*g)},
                                                                        {"uid", kube::uid(*g)}}},
                                {"source", json::object{{"volumeHandles", std::move(handles)}}},
                                {"driver", driver()},
                                {"deletionPolicy", policy.empty() ? "Delete" : policy},
                                {"volumeGroupSnapshotClassName", kube::objectName(*cls)}}}};
      auto res = ctx_.client.create(kVolumeGroupSnapshotContents, "", std::move(body));
      if (!res && res.error().code() != base::ErrorCode::kAlreadyExists) return res.error();
      return {};
    }
    // Members: a VolumeSnapshot per snapshot the content records.
    bool allMembers = true;
    if (const json::array* pairs = kube::array(*content, {"status", "volumeSnapshotHandlePairList"})) {
      for (const json::value& p : *pairs) {
        std::string id = memberId(kube::uid(*g), kube::str(p.as_object(), {"volumeHandle"}));
        std::string name = "snapshot-" + id;
        if (snapshots_->get(ns + "/" + name)) continue;
        allMembers = false;
        json::object vs{{"metadata", json::object{{"name", name}, {"namespace", ns},
                                                  {"labels", json::object{{kGroupLabel, kube::objectName(*g)}}},
                                                  {"ownerReferences", json::array{kube::toJson(kube::OwnerReference{
                                                      "groupsnapshot.storage.k8s.io/v1beta1", "VolumeGroupSnapshot",
                                                      std::string(kube::objectName(*g)), std::string(kube::uid(*g)), true, true})}}}},
                        {"spec", json::object{{"source", json::object{{"volumeSnapshotContentName", "snapcontent-" + id}}}}}};
        auto res = ctx_.client.create(kVolumeSnapshots, ns, std::move(vs));
        if (!res && res.error().code() != base::ErrorCode::kAlreadyExists) return res.error();
      }
    }
    json::object copy = *g;
    json::object& st = kube::ensureObject(copy, {"status"});
    st["boundVolumeGroupSnapshotContentName"] = contentName;
    st["readyToUse"] = allMembers && kube::boolean(*content, {"status", "readyToUse"});
    if (int64_t created = kube::integer(*content, {"status", "creationTime"}); created > 0) st["creationTime"] = kube::formatRfc3339(created / 1'000'000'000);
    if (const json::value* err = kube::field(*content, {"status", "error"})) st["error"] = *err;
    else st.erase("error");
    if (kube::field(*g, {"status"}) && *kube::field(*g, {"status"}) == json::value(st)) return {};
    auto res = ctx_.client.update(kVolumeGroupSnapshots, std::move(copy), "status");
    return res ? base::Status() : base::Status(res.error());
  }

  base::Status syncContent(const std::string& name) {
    kube::ObjectPtr content = groupContents_->get(name);
    if (!content || kube::str(*content, {"spec", "driver"}) != driver()) return {};
    std::string handle(kube::str(*content, {"status", "volumeGroupSnapshotHandle"}));
    if (kube::beingDeleted(*content)) {
      if (!kube::hasFinalizer(*content, kGroupContentFinalizer)) return {};
      if (kube::str(*content, {"spec", "deletionPolicy"}) == "Delete" && !handle.empty()) {
        std::vector<std::string> ids;
        if (const json::array* pairs = kube::array(*content, {"status", "volumeSnapshotHandlePairList"})) {
          for (const json::value& p : *pairs) ids.emplace_back(kube::str(p.as_object(), {"snapshotHandle"}));
        }
        if (auto st = ctx_.csi->deleteGroupSnapshot(handle, ids, {}); !st) {
          (void)setError(kVolumeGroupSnapshotContents, *content, st.error().message());
          return st;
        }
        log().info("deleted group snapshot", {{"content", name}, {"handle", handle}});
      }
      return setFinalizer(ctx_.client, kVolumeGroupSnapshotContents, *content, kGroupContentFinalizer, false);
    }
    if (!handle.empty()) return {};
    std::vector<std::string> volumes;
    if (const json::array* hs = kube::array(*content, {"spec", "source", "volumeHandles"})) {
      for (const json::value& h : *hs) {
        if (h.is_string()) volumes.emplace_back(h.get_string());
      }
    }
    StringMap params = driverParameters(
        groupClasses_->get(std::string(kube::str(*content, {"spec", "volumeGroupSnapshotClassName"}))).get());
    std::string_view groupUid = kube::str(*content, {"spec", "volumeGroupSnapshotRef", "uid"});
    std::string groupName(kube::str(*content, {"spec", "volumeGroupSnapshotRef", "name"}));
    std::string ns(kube::str(*content, {"spec", "volumeGroupSnapshotRef", "namespace"}));
    auto group = ctx_.csi->createGroupSnapshot("groupsnapshot-" + std::string(groupUid), volumes, params, {});
    if (!group) {
      (void)setError(kVolumeGroupSnapshotContents, *content, group.error().message());
      return group.error();
    }
    // Each member's content first (named so a retry finds it), with its status.
    json::array pairs;
    for (const auto& [volume, snap] : group->members) {
      std::string id = memberId(groupUid, volume);
      json::object body{{"metadata", json::object{{"name", "snapcontent-" + id},
                                                  {"labels", json::object{{kGroupLabel, groupName}}},
                                                  {"finalizers", json::array{kContentFinalizer}}}},
                        {"spec", json::object{{"volumeSnapshotRef", json::object{{"kind", "VolumeSnapshot"},
                                                                                 {"apiVersion", "snapshot.storage.k8s.io/v1"},
                                                                                 {"namespace", ns}, {"name", "snapshot-" + id}}},
                                              {"source", json::object{{"snapshotHandle", snap.id}}},
                                              {"driver", driver()},
                                              {"deletionPolicy", kube::str(*content, {"spec", "deletionPolicy"})}}}};
      auto made = ctx_.client.create(kVolumeSnapshotContents, "", std::move(body));
      if (!made && made.error().code() == base::ErrorCode::kAlreadyExists) {
        made = ctx_.client.get(kVolumeSnapshotContents, "", "snapcontent-" + id);
      }
      if (!made) return made.error();
      json::object& mst = kube::ensureObject(*made, {"status"});
      mst["snapshotHandle"] = snap.id;
      mst["restoreSize"] = snap.sizeBytes;
      mst["creationTime"] = snap.creationNanos;
      mst["readyToUse"] = snap.readyToUse;
      auto updated = ctx_.client.update(kVolumeSnapshotContents, std::move(*made), "status");
      if (!updated) return updated.error();
      pairs.push_back(json::object{{"volumeHandle", volume}, {"snapshotHandle", snap.id}});
    }
    json::object copy = *content;
    json::object& st = kube::ensureObject(copy, {"status"});
    st["volumeGroupSnapshotHandle"] = group->id;
    st["creationTime"] = group->creationNanos;
    st["readyToUse"] = group->readyToUse;
    st["volumeSnapshotHandlePairList"] = std::move(pairs);
    st.erase("error");
    auto res = ctx_.client.update(kVolumeGroupSnapshotContents, std::move(copy), "status");
    if (!res) return res.error();
    log().info("group snapshot taken", {{"content", name}, {"handle", group->id}, {"members", group->members.size()}});
    return {};
  }

  std::shared_ptr<kube::Informer> groups_, groupContents_, groupClasses_, snapshots_, contents_, pvcs_, pvs_;
};

// Both halves under one name, as csi-snapshotter handles both kinds.
class Snapshotters : public Runnable {
 public:
  explicit Snapshotters(Context& ctx) : one_(ctx), group_(ctx) {}
  void run(std::stop_token stop) override {
    std::jthread group([this, stop] { group_.run(stop); });
    one_.run(stop);
  }

 private:
  Snapshotter one_;
  GroupSnapshotter group_;
};

}  // namespace

std::unique_ptr<Runnable> makeSnapshotter(Context& ctx) { return std::make_unique<Snapshotters>(ctx); }

}  // namespace trellis::controllers
