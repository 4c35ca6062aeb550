// Kernel storage adapters: commands (mkfs, fs grow), loop devices, mounts,
// and crash-safe file operations (atomic replace, reflink-or-sparse copy).
// Everything here talks to the real kernel; callers keep the policy.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/base/result.h"

namespace trellis::sys {

// ---- commands ----

struct CommandOutput {
  int exitCode = 0;        // 128+N when killed by signal N
  std::string output;      // stdout and stderr, interleaved
};
// Runs argv[0] (searched in PATH) with no shell; stdin is /dev/null.
base::Result<CommandOutput> runCommand(const std::vector<std::string>& argv);
// As runCommand, but a non-zero exit is an error carrying the output's tail.
base::Status runChecked(const std::vector<std::string>& argv);

// ---- loop devices ----

// Attaches `file` to a free loop device (4 KiB logical blocks; direct I/O
// when the backing filesystem allows it) and returns "/dev/loopN"; if the file is already
// attached, returns that device instead (idempotent across restarts).
base::Result<std::string> loopAttach(const std::string& file);
// The loop device backed by `file` (compared by inode), if any.
std::optional<std::string> loopFind(const std::string& file);
// Every loop device whose backing file lies under `dir`, with that file.
std::vector<std::pair<std::string, std::string>> loopsUnder(const std::string& dir);
base::Status loopDetach(const std::string& device);
// Re-reads the backing file's size after it grew (LOOP_SET_CAPACITY).
base::Status loopRefreshCapacity(const std::string& device);
base::Result<int64_t> blockDeviceSize(const std::string& device);

// ---- mounts ----

struct MountEntry {
  std::string mountPoint;
  std::string root;     // the path inside the source mounted here ("/" for a whole fs)
  std::string source;   // the device or "none"
  std::string fsType;
  std::string options;  // per-mount options ("rw,relatime")
  unsigned major = 0, minor = 0;
};
// The calling process's mount table (/proc/self/mountinfo), in mount order.
std::vector<MountEntry> mounts();
// The top-most mount at exactly `path` (after resolving symlinks), if any.
std::optional<MountEntry> mountAt(const std::string& path);

// mount(2); `data` is the filesystem's option string.
base::Status mountFs(const std::string& source, const std::string& target, const std::string& fsType,
                     unsigned long flags, const std::string& data);
// A bind mount, made read-only with a remount when asked.
base::Status bindMount(const std::string& source, const std::string& target, bool readOnly);
// Unmounts the top-most mount at `target`; not mounted is success.
base::Status unmount(const std::string& target);

// ---- files ----

// Writes `data` to a temporary file beside `path`, fsyncs it, renames it over
// `path` and fsyncs the directory: after a crash `path` holds the old or the
// new content, never a mix.
base::Status writeFileAtomic(const std::string& path, const std::string& data);
base::Status fsyncDir(const std::string& dir);
// Copies `src` to a new file `dst`: a reflink (FICLONE) when the filesystem
// shares extents, otherwise a sparse-aware copy (holes stay holes). Fsynced.
// `reflinked` tells which happened.
base::Status cloneFile(const std::string& src, const std::string& dst, bool* reflinked = nullptr);

// The filesystem on a block device ("ext4", "xfs", ...), "" when it has none.
base::Result<std::string> probeFsType(const std::string& device);

}  // namespace trellis::sys
