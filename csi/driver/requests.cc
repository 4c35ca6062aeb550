#include "csi/driver/requests.h"

#include <sys/mount.h>

#include <map>
#include <optional>

namespace trellis::csi {

std::string unsupportedCapability(const v1::VolumeCapability& cap) {
  if (cap.access_type_case() == v1::VolumeCapability::ACCESS_TYPE_NOT_SET) {
    return "volume capability has neither block nor mount access type";
  }
  if (!cap.has_access_mode()) return "volume capability has no access mode";
  switch (cap.access_mode().mode()) {
    case v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER:
    case v1::VolumeCapability::AccessMode::SINGLE_NODE_READER_ONLY:
    case v1::VolumeCapability::AccessMode::SINGLE_NODE_SINGLE_WRITER:
    case v1::VolumeCapability::AccessMode::SINGLE_NODE_MULTI_WRITER:
      break;
    case v1::VolumeCapability::AccessMode::UNKNOWN:
      return "access mode UNKNOWN is not an access mode";
    default:
      return "access mode " + v1::VolumeCapability::AccessMode::Mode_Name(cap.access_mode().mode()) +
             " is not supported: a Trellis volume lives on one node";
  }
  if (cap.has_mount()) {
    const std::string& fs = cap.mount().fs_type();
    if (!fs.empty() && fs != "ext4" && fs != "ext3" && fs != "xfs" && fs != "btrfs") {
      return "fs_type \"" + fs + "\" is not supported (ext4, ext3, xfs, btrfs)";
    }
    const std::string& group = cap.mount().volume_mount_group();
    if (!group.empty() && group.find_first_not_of("0123456789") != std::string::npos) {
      return "volume_mount_group \"" + group + "\" is not a numeric group id";
    }
  }
  return "";
}

bool validName(const std::string& name) {
  if (name.empty() || name.size() > 128) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(name[i]);
    if (c <= 0x08 || c == 0x0b || c == 0x0c || (c >= 0x0e && c <= 0x1f) || c == 0x7f) return false;
    // U+0080-U+009F are C2 80 - C2 9F in UTF-8.
    if (c == 0xc2 && i + 1 < name.size()) {
      unsigned char n = static_cast<unsigned char>(name[i + 1]);
      if (n >= 0x80 && n <= 0x9f) return false;
    }
  }
  return true;
}

std::string unknownParameter(const google::protobuf::Map<std::string, std::string>& params, bool mutableParams) {
  for (const auto& [k, v] : params) {
    if (k.rfind("csi.storage.k8s.io/", 0) == 0) continue;
    if (k == "readAheadKB") {
      if (v.empty() || v.size() > 6 || v.find_first_not_of("0123456789") != std::string::npos) {
        return "parameter readAheadKB=\"" + v + "\" is not a number of KiB (0-999999)";
      }
      continue;
    }
    return "unknown parameter \"" + k + "\"" + (mutableParams ? " (mutable: readAheadKB)" : " (known: readAheadKB)");
  }
  return "";
}

base::Result<MountOptions> parseMountFlags(const google::protobuf::RepeatedPtrField<std::string>& flags) {
  static const std::map<std::string, unsigned long> known = {
      {"ro", MS_RDONLY},          {"rw", 0},           {"defaults", 0},          {"noatime", MS_NOATIME},
      {"nodiratime", MS_NODIRATIME}, {"relatime", MS_RELATIME}, {"strictatime", MS_STRICTATIME},
      {"nosuid", MS_NOSUID},      {"nodev", MS_NODEV}, {"noexec", MS_NOEXEC},   {"sync", MS_SYNCHRONOUS},
      {"dirsync", MS_DIRSYNC},    {"lazytime", MS_LAZYTIME}};
  MountOptions out;
  size_t total = 0;
  for (const auto& whole : flags) {
    total += whole.size();
    // A flag may itself be a comma-separated list, as in mount -o.
    size_t start = 0;
    while (start <= whole.size()) {
      size_t end = whole.find(',', start);
      std::string f = whole.substr(start, end == std::string::npos ? std::string::npos : end - start);
      start = end == std::string::npos ? whole.size() + 1 : end + 1;
      if (f.empty()) continue;
      if (f.find_first_of(" \t\n\\\"'") != std::string::npos) {
        return base::makeError(base::ErrorCode::kInvalidArgument, "mount flag \"{}\" has whitespace or quotes", f);
      }
      if (auto it = known.find(f); it != known.end()) {
        out.flags |= it->second;
      } else {
        out.data += (out.data.empty() ? "" : ",") + f;
      }
    }
  }
  if (total > 4096) return base::Error(base::ErrorCode::kInvalidArgument, "mount_flags exceed 4 KiB");
  return out;
}

// `v` rounded up to a multiple of `to`; nullopt when that overflows int64.
namespace {

std::optional<int64_t> roundUp(int64_t v, int64_t to) {
  int64_t sum = 0;
  if (__builtin_add_overflow(v, to - 1, &sum)) return std::nullopt;
  return sum / to * to;
}

}  // namespace

// The size a capacity range asks for: at least `required`, at most `limit`,
// rounded up to whole MiB (whole 4 KiB pages, or exact 512-byte sectors, when
// the limit is tighter); `minimum` for the filesystem (xfs needs 300 MiB).
base::Result<int64_t> sizeFor(const v1::CapacityRange* range, int64_t defaultSize, int64_t minimum) {
  int64_t required = range ? range->required_bytes() : 0;
  int64_t limit = range ? range->limit_bytes() : 0;
  if (required < 0 || limit < 0) return base::Error(base::ErrorCode::kInvalidArgument, "capacity_range must not be negative");
  if (limit && required > limit) {
    return base::makeError(base::ErrorCode::kInvalidArgument, "capacity_range: required_bytes {} exceeds limit_bytes {}", required, limit);
  }
  if (!required) required = limit ? std::min(limit, defaultSize) : defaultSize;
  required = std::max(required, minimum);
  if (required > kMaxVolumeBytes) {
    return base::makeError(base::ErrorCode::kOutOfRange, "required_bytes {} exceeds the largest volume, {} bytes (1 EiB)",
                           required, kMaxVolumeBytes);
  }
  for (int64_t unit : {kMiB, int64_t{4096}, int64_t{512}}) {
    auto size = roundUp(required, unit);
    if (size && (!limit || *size <= limit)) return *size;
  }
  return base::makeError(base::ErrorCode::kOutOfRange, "no size in [{}, {}] bytes: volumes are whole 512-byte sectors{}", required,
                         limit, minimum > 0 ? " of at least " + std::to_string(minimum) + " bytes" : "");
}

bool inRange(int64_t size, const v1::CapacityRange* range) {
  if (!range) return true;
  return size >= range->required_bytes() && (!range->limit_bytes() || size <= range->limit_bytes());
}

}  // namespace trellis::csi
