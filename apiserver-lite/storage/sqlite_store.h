// The embedded store: SQLite in WAL mode, every commit fsynced
// (synchronous=FULL), concurrent writes batched into one transaction by a
// commit thread (group commit). History lives in an append-only `log` table;
// `kv` points at each live key's latest row. After a crash (kill -9, power
// loss) SQLite's WAL recovery leaves exactly the acknowledged writes.
#pragma once

#include <memory>
#include <string>

#include "apiserver-lite/storage/store.h"

namespace trellis::apiserver::storage {

struct SqliteOptions {
  size_t maxBatch = 512;  // writes per transaction at most
};

class SqliteStore : public Store {
 public:
  // Opens (creating if needed) the database at `path`.
  static base::Result<std::unique_ptr<SqliteStore>> open(const std::string& path, SqliteOptions options = {});
  ~SqliteStore() override;

  void write(Write w, WriteCallback done) override;
  base::Result<KeyValue> get(const std::string& key) override;
  base::Result<Snapshot> list(const std::string& prefix, Revision at = 0) override;
  base::Result<std::vector<Event>> eventsSince(Revision after, size_t max) override;
  Revision currentRevision() override;
  Revision compactedRevision() override;
  base::Status compact(Revision upTo) override;
  void setListener(CommitListener listener) override;

  // Commits done so far (a batch is one commit): shows how well writes group.
  uint64_t commits() const;

  struct Impl;

 private:
  explicit SqliteStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis::apiserver::storage
