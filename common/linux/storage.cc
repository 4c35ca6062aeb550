#include "common/linux/storage.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

extern char** environ;

namespace trellis::sys {

namespace {

// Closes a file descriptor at scope exit.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { if (fd_ >= 0) ::close(fd_); }
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept { std::swap(fd_, o.fd_); return *this; }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_;
};

std::string tail(const std::string& s, size_t n) {
  std::string t = s.size() > n ? s.substr(s.size() - n) : s;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  return t;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescapeMountField(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
      int v = (s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0');
      out.push_back(static_cast<char>(v));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::string canonical(const std::string& path) {
  std::error_code ec;
  auto p = std::filesystem::canonical(path, ec);
  return ec ? path : p.string();
}

}  // namespace

// ---- commands ----

base::Result<CommandOutput> runCommand(const std::vector<std::string>& argv) {
  if (argv.empty()) return base::Error(base::ErrorCode::kInvalidArgument, "empty command");
  int pipeFds[2];
  if (::pipe2(pipeFds, O_CLOEXEC) != 0) return base::Error::fromErrno(errno, "pipe");
  Fd readEnd(pipeFds[0]), writeEnd(pipeFds[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, writeEnd.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, writeEnd.get(), 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return base::Error::fromErrno(rc, "running " + argv[0]);
  writeEnd = Fd();
  CommandOutput out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(readEnd.get(), buf, sizeof buf);
    if (n > 0) {
      if (out.output.size() < (1 << 20)) out.output.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  out.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return out;
}

base::Status runChecked(const std::vector<std::string>& argv) {
  auto r = runCommand(argv);
  if (!r) return std::move(r).error();
  if (r->exitCode != 0) {
    return base::makeError(base::ErrorCode::kInternal, "{} exited with {}: {}", argv[0], r->exitCode,
                           tail(r->output, 400));
  }
  return {};
}

// ---- loop devices ----

namespace {

Fd openLoop(int n, int flags) {
  std::string dev = "/dev/loop" + std::to_string(n);
  int fd = ::open(dev.c_str(), flags | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    // Containers often lack device nodes for loop devices the kernel just made.
    ::mknod(dev.c_str(), S_IFBLK | 0660, makedev(7, static_cast<unsigned>(n)));
    fd = ::open(dev.c_str(), flags | O_CLOEXEC);
  }
  return Fd(fd);
}

// Every attached loop device: its number and status.
std::vector<std::pair<int, loop_info64>> attachedLoops() {
  std::vector<std::pair<int, loop_info64>> out;
  DIR* d = ::opendir("/sys/block");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (std::strncmp(e->d_name, "loop", 4) != 0) continue;
    char* end = nullptr;
    long n = std::strtol(e->d_name + 4, &end, 10);
    if (!end || *end != '\0' || end == e->d_name + 4) continue;
    if (::access((std::string("/sys/block/") + e->d_name + "/loop/backing_file").c_str(), F_OK) != 0) continue;
    Fd fd = openLoop(static_cast<int>(n), O_RDONLY);
    if (!fd.valid()) continue;
    loop_info64 info{};
    if (::ioctl(fd.get(), LOOP_GET_STATUS64, &info) == 0) out.emplace_back(static_cast<int>(n), info);
  }
  ::closedir(d);
  return out;
}

std::string backingFile(int n) {
  std::ifstream in("/sys/block/loop" + std::to_string(n) + "/loop/backing_file");
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace

std::optional<std::string> loopFind(const std::string& file) {
  struct stat st{};
  if (::stat(file.c_str(), &st) != 0) return std::nullopt;
  for (const auto& [n, info] : attachedLoops()) {
    if (info.lo_inode == st.st_ino && info.lo_device == st.st_dev) return "/dev/loop" + std::to_string(n);
  }
  return std::nullopt;
}

std::vector<std::pair<std::string, std::string>> loopsUnder(const std::string& dir) {
  std::vector<std::pair<std::string, std::string>> out;
  std::string prefix = canonical(dir) + "/";
  for (const auto& [n, info] : attachedLoops()) {
    std::string file = backingFile(n);
    if (file.rfind(prefix, 0) == 0) out.emplace_back("/dev/loop" + std::to_string(n), file);
  }
  return out;
}

base::Result<std::string> loopAttach(const std::string& file) {
  if (auto existing = loopFind(file)) return *existing;
  Fd backing(::open(file.c_str(), O_RDWR | O_CLOEXEC));
  if (!backing.valid()) return base::Error::fromErrno(errno, "opening " + file);
  Fd ctl(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
  if (!ctl.valid()) return base::Error::fromErrno(errno, "opening /dev/loop-control");
  for (int attempt = 0; attempt < 20; ++attempt) {
    int n = ::ioctl(ctl.get(), LOOP_CTL_GET_FREE);
    if (n < 0) return base::Error::fromErrno(errno, "finding a free loop device");
    Fd dev = openLoop(n, O_RDWR);
    if (!dev.valid()) return base::Error::fromErrno(errno, "opening /dev/loop" + std::to_string(n));
    loop_config cfg{};
    cfg.fd = static_cast<__u32>(backing.get());
    // A fixed 4 KiB logical block size: a filesystem made on one attach
    // must mount on every later one, whatever the backing device's sector
    // size and whether direct I/O was accepted (the kernel's default follows both).
    cfg.block_size = 4096;
    cfg.info.lo_flags = LO_FLAGS_DIRECT_IO;
    std::strncpy(reinterpret_cast<char*>(cfg.info.lo_file_name), file.c_str(), LO_NAME_SIZE - 1);
    int rc = ::ioctl(dev.get(), LOOP_CONFIGURE, &cfg);
    if (rc != 0 && errno == EINVAL) {
      // The backing filesystem refuses direct I/O: use the page cache.
      cfg.info.lo_flags = 0;
      rc = ::ioctl(dev.get(), LOOP_CONFIGURE, &cfg);
    }
    if (rc == 0) return "/dev/loop" + std::to_string(n);
    if (errno != EBUSY) return base::Error::fromErrno(errno, "attaching " + file + " to /dev/loop" + std::to_string(n));
    // Another process took that device between GET_FREE and CONFIGURE: try the next.
  }
  return base::Error(base::ErrorCode::kUnavailable, "no free loop device after 20 attempts");
}

base::Status loopDetach(const std::string& device) {
  Fd dev(::open(device.c_str(), O_RDONLY | O_CLOEXEC));
  if (!dev.valid()) return errno == ENOENT ? base::okStatus() : base::Status(base::Error::fromErrno(errno, "opening " + device));
  if (::ioctl(dev.get(), LOOP_CLR_FD, 0) != 0 && errno != ENXIO) return base::Error::fromErrno(errno, "detaching " + device);
  return {};
}

base::Status loopRefreshCapacity(const std::string& device) {
  Fd dev(::open(device.c_str(), O_RDONLY | O_CLOEXEC));
  if (!dev.valid()) return base::Error::fromErrno(errno, "opening " + device);
  if (::ioctl(dev.get(), LOOP_SET_CAPACITY, 0) != 0) return base::Error::fromErrno(errno, "resizing " + device);
  return {};
}

base::Result<int64_t> blockDeviceSize(const std::string& device) {
  Fd dev(::open(device.c_str(), O_RDONLY | O_CLOEXEC));
  if (!dev.valid()) return base::Error::fromErrno(errno, "opening " + device);
  uint64_t size = 0;
  if (::ioctl(dev.get(), BLKGETSIZE64, &size) != 0) return base::Error::fromErrno(errno, "sizing " + device);
  return static_cast<int64_t>(size);
}

// ---- mounts ----

std::vector<MountEntry> mounts() {
  std::vector<MountEntry> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, point, options, word;
    fields >> id >> parent >> devno >> root >> point >> options;
    while (fields >> word && word != "-") {
    }
    MountEntry e;
    fields >> e.fsType >> e.source;
    e.root = unescapeMountField(root);
    e.mountPoint = unescapeMountField(point);
    e.source = unescapeMountField(e.source);
    e.options = options;
    std::sscanf(devno.c_str(), "%u:%u", &e.major, &e.minor);
    out.push_back(std::move(e));
  }
  return out;
}

std::optional<MountEntry> mountAt(const std::string& path) {
  std::string p = canonical(path);
  std::optional<MountEntry> found;
  for (auto& e : mounts()) {
    if (e.mountPoint == p) found = std::move(e);
  }
  return found;
}

base::Status mountFs(const std::string& source, const std::string& target, const std::string& fsType,
                     unsigned long flags, const std::string& data) {
  if (::mount(source.c_str(), target.c_str(), fsType.empty() ? nullptr : fsType.c_str(), flags,
              data.empty() ? nullptr : data.c_str()) != 0) {
    return base::Error::fromErrno(errno, "mounting " + source + " on " + target);
  }
  return {};
}

base::Status bindMount(const std::string& source, const std::string& target, bool readOnly) {
  if (::mount(source.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    return base::Error::fromErrno(errno, "bind-mounting " + source + " on " + target);
  }
  if (readOnly && ::mount(nullptr, target.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr) != 0) {
    int err = errno;
    ::umount2(target.c_str(), 0);
    return base::Error::fromErrno(err, "making " + target + " read-only");
  }
  return {};
}

base::Status unmount(const std::string& target) {
  if (::umount2(target.c_str(), UMOUNT_NOFOLLOW) == 0) return {};
  int err = errno;
  if (err == ENOENT) return {};
  if (err == EINVAL && !mountAt(target)) return {};
  return base::Error::fromErrno(err, "unmounting " + target);
}

// ---- files ----

base::Status fsyncDir(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return base::Error::fromErrno(errno, "opening " + dir);
  if (::fsync(fd.get()) != 0) return base::Error::fromErrno(errno, "syncing " + dir);
  return {};
}

base::Status writeFileAtomic(const std::string& path, const std::string& data) {
  std::string tmp = path + ".tmp";
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return base::Error::fromErrno(errno, "creating " + tmp);
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd.get(), data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::Error::fromErrno(errno, "writing " + tmp);
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return base::Error::fromErrno(errno, "syncing " + tmp);
  fd = Fd();
  if (::rename(tmp.c_str(), path.c_str()) != 0) return base::Error::fromErrno(errno, "renaming " + tmp);
  return fsyncDir(std::filesystem::path(path).parent_path().string());
}

base::Status cloneFile(const std::string& src, const std::string& dst, bool* reflinked) {
  Fd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) return base::Error::fromErrno(errno, "opening " + src);
  Fd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!out.valid()) return base::Error::fromErrno(errno, "creating " + dst);
  struct stat st{};
  if (::fstat(in.get(), &st) != 0) return base::Error::fromErrno(errno, "stat " + src);
  bool cloned = ::ioctl(out.get(), FICLONE, in.get()) == 0;
  if (!cloned) {
    // Copy only the data extents; the holes between them stay unallocated.
    off_t pos = 0;
    while (pos < st.st_size) {
      off_t data = ::lseek(in.get(), pos, SEEK_DATA);
      if (data < 0) {
        if (errno == ENXIO) break;  // only a hole remains
        return base::Error::fromErrno(errno, "seeking data in " + src);
      }
      off_t hole = ::lseek(in.get(), data, SEEK_HOLE);
      if (hole < 0) hole = st.st_size;
      off_t from = data, to = data;
      while (from < hole) {
        ssize_t n = ::copy_file_range(in.get(), &from, out.get(), &to, static_cast<size_t>(hole - from), 0);
        if (n < 0) {
          if (errno == EINTR) continue;
          return base::Error::fromErrno(errno, "copying " + src);
        }
        if (n == 0) break;
      }
      pos = hole;
    }
    if (::ftruncate(out.get(), st.st_size) != 0) return base::Error::fromErrno(errno, "sizing " + dst);
  }
  if (::fsync(out.get()) != 0) return base::Error::fromErrno(errno, "syncing " + dst);
  if (reflinked) *reflinked = cloned;
  return {};
}

base::Result<std::string> probeFsType(const std::string& device) {
  auto r = runCommand({"blkid", "-p", "-s", "TYPE", "-o", "value", device});
  if (!r) return std::move(r).error();
  if (r->exitCode == 2) return std::string();  // nothing recognised
  if (r->exitCode != 0) {
    return base::makeError(base::ErrorCode::kInternal, "blkid {} exited with {}: {}", device, r->exitCode,
                           tail(r->output, 200));
  }
  return tail(r->output, 64);
}

}  // namespace trellis::sys
