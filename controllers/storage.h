// Reading PVCs, PVs and StorageClasses: what the binder, the protection
// controllers, the provisioner and the scheduler all need to agree on.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/object.hpp>

#include "common/base/result.h"
#include "common/kube/client.h"
#include "common/kube/informer.h"
#include "common/kube/object.h"

namespace trellis::controllers {

// Annotations of the PV controller and the external provisioner.
inline constexpr const char* kAnnBindCompleted = "pv.kubernetes.io/bind-completed";
inline constexpr const char* kAnnBoundByController = "pv.kubernetes.io/bound-by-controller";
inline constexpr const char* kAnnProvisionedBy = "pv.kubernetes.io/provisioned-by";
inline constexpr const char* kAnnStorageProvisioner = "volume.kubernetes.io/storage-provisioner";
inline constexpr const char* kAnnBetaStorageProvisioner = "volume.beta.kubernetes.io/storage-provisioner";
inline constexpr const char* kAnnSelectedNode = "volume.kubernetes.io/selected-node";
inline constexpr const char* kAnnDefaultClass = "storageclass.kubernetes.io/is-default-class";
inline constexpr const char* kNoProvisioner = "kubernetes.io/no-provisioner";

// The Quantity at `path`, in units (nullopt when missing or malformed).
std::optional<long double> quantityAt(const boost::json::object& obj, kube::Path path);

// spec.resources.requests.storage of a PVC, spec.capacity.storage of a PV
// (bytes; nullopt when missing or malformed).
std::optional<long double> claimRequest(const boost::json::object& pvc);
std::optional<long double> volumeCapacity(const boost::json::object& pv);

std::vector<std::string> accessModes(const boost::json::object& obj);  // spec.accessModes
std::string_view volumeMode(const boost::json::object& obj);           // "Filesystem" when unset
std::string_view claimClass(const boost::json::object& pvc);           // spec.storageClassName
bool waitsForFirstConsumer(const boost::json::object& storageClass);
// The provisioner a claim waits for (the annotation, new or beta).
std::string_view claimProvisioner(const boost::json::object& pvc);

inline constexpr const char* kDriverTopologyKey = "topology.csi.trellis.dev/node";

// The driver's topology segment on a node: the node's values of the
// topologyKeys its CSINode lists for the driver or, without that, of the
// node's topology.csi.trellis.dev/node label; nullopt when neither.
std::optional<std::map<std::string, std::string>> driverSegment(const boost::json::object& node,
                                                                const boost::json::object* csiNode,
                                                                std::string_view driver);

// A class's `parameters` as the driver sees them: without the
// csi.storage.k8s.io/ keys, which are the sidecars' own (secrets, fstype).
std::map<std::string, std::string> driverParameters(const boost::json::object* cls);

// The class an object names in `field`, or else the driver's class with
// `defaultAnnotation` = "true" (VolumeSnapshotClass, VolumeGroupSnapshotClass).
kube::ObjectPtr classFor(kube::Informer& classes, const boost::json::object& obj, kube::Path field,
                         std::string_view defaultAnnotation, std::string_view driver);

// Sets status.error {time, message} (unless it says that already).
base::Status setStatusError(kube::Client& client, const kube::Resource& r, const boost::json::object& obj,
                            const std::string& message);

// The decoded data of Secret ns/name (entries that are not base64 are
// left out); an empty name is no secret (an empty map). `what` names it in
// errors ("the controller publish secret").
base::Result<std::map<std::string, std::string>> secretData(kube::Client& client, std::string_view ns,
                                                             std::string_view name, std::string_view what);
// The same for a SecretReference object ({name, namespace}), when present.
base::Result<std::map<std::string, std::string>> secretData(kube::Client& client, const boost::json::object* ref,
                                                             std::string_view what);

// Bytes as the sidecars write them (a BinarySI Quantity: "1Gi", "1536Mi").
std::string bytesQuantity(int64_t bytes);

// "ns/name" of the claim a PV's claimRef names ("" when none).
std::string claimRefKey(const boost::json::object& pv);

}  // namespace trellis::controllers
