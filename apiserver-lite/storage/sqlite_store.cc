#include "apiserver-lite/storage/sqlite_store.h"

#include <sqlite3.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

namespace trellis::apiserver::storage {

using base::ErrorCode;
using base::makeError;

std::string prefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    unsigned char c = static_cast<unsigned char>(end.back());
    if (c < 0xff) {
      end.back() = static_cast<char>(c + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\xff');  // every key is below it in practice
}

namespace {

constexpr const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS log(
  rev INTEGER PRIMARY KEY,
  key TEXT NOT NULL,
  value BLOB NOT NULL,
  create_rev INTEGER NOT NULL,
  deleted INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS log_key_rev ON log(key, rev);
CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY, rev INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
)";

// A prepared statement, reset after each use.
class Stmt {
 public:
  Stmt() = default;
  Stmt(sqlite3* db, const char* sql) {
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s_, nullptr) != SQLITE_OK) s_ = nullptr;
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(Stmt&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
  Stmt& operator=(Stmt&& o) noexcept {
    std::swap(s_, o.s_);
    return *this;
  }
  bool ok() const { return s_ != nullptr; }
  Stmt& bind(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  Stmt& bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& bindBlob(int i, const std::string& v) {
    sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  int step() { return sqlite3_step(s_); }
  void reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  int64_t i64(int col) { return sqlite3_column_int64(s_, col); }
  std::string text(int col) {
    const void* p = sqlite3_column_blob(s_, col);
    int n = sqlite3_column_bytes(s_, col);
    return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
  }

 private:
  sqlite3_stmt* s_ = nullptr;
};

base::Error sqliteError(sqlite3* db, std::string_view what) {
  return makeError(ErrorCode::kIo, "{}: {}", what, sqlite3_errmsg(db));
}

base::Status exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    base::Error e = makeError(ErrorCode::kIo, "{}: {}", sql, err ? err : "?");
    sqlite3_free(err);
    return e;
  }
  return {};
}

base::Result<sqlite3*> openDb(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    base::Error e = makeError(ErrorCode::kIo, "opening {}: {}", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close(db);
    return e;
  }
  sqlite3_busy_timeout(db, 5000);
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=OFF"}) {
    if (auto st = exec(db, pragma); !st) {
      sqlite3_close(db);
      return std::move(st).error();
    }
  }
  return db;
}

struct KeyMeta {
  Revision createRevision;
  Revision modRevision;
};

struct Pending {
  Write write;
  WriteCallback done;
};

}  // namespace

struct SqliteStore::Impl {
  SqliteOptions options;
  std::string path;
  sqlite3* wdb = nullptr;  // the commit thread's connection
  sqlite3* rdb = nullptr;  // readers' connection (guarded by readMu)
  std::mutex readMu;
  Stmt insLog, upsertKv, delKv, setMeta;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<Pending> queue;
  bool stopping = false;
  std::thread committer;
  // Held while the listener runs: replacing it waits for a call in flight.
  std::mutex listenerMu;
  CommitListener listener;

  // Touched only by the commit thread (and open()).
  std::unordered_map<std::string, KeyMeta> index;
  std::atomic<Revision> revision{0};
  std::atomic<Revision> compacted{0};
  std::atomic<uint64_t> commits{0};

  ~Impl() {
    {
      std::lock_guard g(mu);
      stopping = true;
    }
    cv.notify_all();
    if (committer.joinable()) committer.join();
    insLog = Stmt();
    upsertKv = Stmt();
    delKv = Stmt();
    setMeta = Stmt();
    sqlite3_close(wdb);
    sqlite3_close(rdb);
  }

  void run() {
    for (;;) {
      std::vector<Pending> batch;
      {
        std::unique_lock g(mu);
        cv.wait(g, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) return;  // stopping, nothing left
        while (!queue.empty() && batch.size() < options.maxBatch) {
          batch.push_back(std::move(queue.front()));
          queue.pop_front();
        }
      }
      commitBatch(batch);
    }
  }

  // Validates and applies a batch in one transaction; nothing of it is visible
  // (index, revision, callbacks) until COMMIT has returned.
  void commitBatch(std::vector<Pending>& batch) {
    std::vector<base::Result<KeyValue>> results;
    std::vector<Event> events;
    results.reserve(batch.size());
    std::map<std::string, std::optional<KeyMeta>> overlay;  // this batch's view of changed keys
    auto lookup = [&](const std::string& key) -> std::optional<KeyMeta> {
      if (auto it = overlay.find(key); it != overlay.end()) return it->second;
      if (auto it = index.find(key); it != index.end()) return it->second;
      return std::nullopt;
    };
    Revision rev = revision.load();
    bool failed = false;
    base::Error failure(ErrorCode::kIo, "");
    if (auto st = exec(wdb, "BEGIN IMMEDIATE"); !st) {
      failed = true;
      failure = std::move(st).error();
    }
    std::vector<std::string> lastValues(batch.size());
    for (size_t i = 0; i < batch.size() && !failed; ++i) {
      const Write& w = batch[i].write;
      std::optional<KeyMeta> cur = lookup(w.key);
      if (w.op == Write::Op::kCreate && cur) {
        results.push_back(makeError(ErrorCode::kAlreadyExists, "key {} already exists", w.key));
        continue;
      }
      if (w.op != Write::Op::kCreate && !cur) {
        results.push_back(makeError(ErrorCode::kNotFound, "key {} not found", w.key));
        continue;
      }
      if (w.op != Write::Op::kCreate && w.expected != 0 && cur->modRevision != w.expected) {
        results.push_back(makeError(ErrorCode::kConflict, "key {} is at revision {}, not {}", w.key, cur->modRevision,
                                    w.expected));
        continue;
      }
      Revision next = rev + 1;
      KeyValue kv{w.key, w.value, w.op == Write::Op::kCreate ? next : cur->createRevision, next};
      bool del = w.op == Write::Op::kDelete;
      if (del) {
        // The delete row carries the last value, so watchers replaying history see it.
        auto last = readValue(wdb, w.key, cur->modRevision);
        if (!last) {
          failed = true;
          failure = std::move(last).error();
          break;
        }
        kv.value = std::move(*last);
      }
      insLog.bind(1, next).bind(2, w.key).bindBlob(3, kv.value).bind(4, kv.createRevision).bind(5, del ? 1 : 0);
      int rc = insLog.step();
      insLog.reset();
      if (rc == SQLITE_DONE) {
        Stmt& s = del ? delKv : upsertKv;
        s.bind(1, w.key);
        if (!del) s.bind(2, next);
        rc = s.step();
        s.reset();
      }
      if (rc != SQLITE_DONE) {
        failed = true;
        failure = sqliteError(wdb, "writing");
        break;
      }
      rev = next;
      overlay[w.key] = del ? std::nullopt : std::optional<KeyMeta>(KeyMeta{kv.createRevision, next});
      events.push_back(Event{del ? Event::Type::kDelete : Event::Type::kPut, kv, w.op == Write::Op::kCreate});
      results.push_back(std::move(kv));
    }
    if (!failed && rev != revision.load()) {
      setMeta.bind(1, std::string("revision")).bind(2, rev);
      int rc = setMeta.step();
      setMeta.reset();
      if (rc != SQLITE_DONE) {
        failed = true;
        failure = sqliteError(wdb, "writing");
      }
    }
    if (!failed) {
      if (auto st = exec(wdb, "COMMIT"); !st) {  // fsync of the WAL happens here
        failed = true;
        failure = std::move(st).error();
      }
    }
    if (failed) {
      static_cast<void>(exec(wdb, "ROLLBACK"));  // already failing; nothing more to report
      for (Pending& p : batch) p.done(failure);
      return;
    }
    commits++;
    for (auto& [key, meta] : overlay) {
      if (meta) index[key] = *meta;
      else index.erase(key);
    }
    revision.store(rev);
    if (!events.empty()) {
      std::lock_guard lg(listenerMu);
      if (listener) listener(events);
    }
    for (size_t i = 0; i < batch.size(); ++i) batch[i].done(std::move(results[i]));
  }

  static base::Result<std::string> readValue(sqlite3* db, const std::string& key, Revision rev) {
    Stmt s(db, "SELECT value FROM log WHERE rev = ? AND key = ?");
    s.bind(1, rev).bind(2, key);
    if (s.step() != SQLITE_ROW) return sqliteError(db, "reading the last value of " + key);
    return s.text(0);
  }
};

SqliteStore::SqliteStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SqliteStore::~SqliteStore() = default;

base::Result<std::unique_ptr<SqliteStore>> SqliteStore::open(const std::string& path, SqliteOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->path = path;
  auto w = openDb(path);
  if (!w) return std::move(w).error();
  impl->wdb = *w;
  if (auto st = exec(impl->wdb, kSchema); !st) return std::move(st).error().wrap("creating schema in {}", path);
  auto r = openDb(path);
  if (!r) return std::move(r).error();
  impl->rdb = *r;
  impl->insLog = Stmt(impl->wdb, "INSERT INTO log(rev, key, value, create_rev, deleted) VALUES(?, ?, ?, ?, ?)");
  impl->upsertKv = Stmt(impl->wdb, "INSERT INTO kv(key, rev) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET rev = ?2");
  impl->delKv = Stmt(impl->wdb, "DELETE FROM kv WHERE key = ?");
  impl->setMeta = Stmt(impl->wdb, "INSERT INTO meta(name, value) VALUES(?1, ?2) ON CONFLICT(name) DO UPDATE SET value = ?2");
  if (!impl->insLog.ok() || !impl->upsertKv.ok() || !impl->delKv.ok() || !impl->setMeta.ok()) {
    return sqliteError(impl->wdb, "preparing statements");
  }
  // Recover the index and the revision.
  Stmt idx(impl->wdb, "SELECT kv.key, log.create_rev, kv.rev FROM kv JOIN log ON log.rev = kv.rev");
  int rc;
  while ((rc = idx.step()) == SQLITE_ROW) impl->index.emplace(idx.text(0), KeyMeta{idx.i64(1), idx.i64(2)});
  if (rc != SQLITE_DONE) return sqliteError(impl->wdb, "loading the index");
  Stmt meta(impl->wdb, "SELECT name, value FROM meta");
  while (meta.step() == SQLITE_ROW) {
    std::string name = meta.text(0);
    if (name == "revision") impl->revision = meta.i64(1);
    if (name == "compacted") impl->compacted = meta.i64(1);
  }
  Stmt maxRev(impl->wdb, "SELECT COALESCE(MAX(rev), 0) FROM log");
  if (maxRev.step() == SQLITE_ROW) impl->revision = std::max<Revision>(impl->revision.load(), maxRev.i64(0));
  Impl* raw = impl.get();
  impl->committer = std::thread([raw] { raw->run(); });
  return std::unique_ptr<SqliteStore>(new SqliteStore(std::move(impl)));
}

void SqliteStore::write(Write w, WriteCallback done) {
  {
    std::lock_guard g(impl_->mu);
    if (impl_->stopping) {
      done(makeError(ErrorCode::kUnavailable, "store is closing"));
      return;
    }
    impl_->queue.push_back(Pending{std::move(w), std::move(done)});
  }
  impl_->cv.notify_one();
}

base::Result<KeyValue> SqliteStore::get(const std::string& key) {
  std::lock_guard g(impl_->readMu);
  Stmt s(impl_->rdb, "SELECT log.value, log.create_rev, log.rev FROM kv JOIN log ON log.rev = kv.rev WHERE kv.key = ?");
  s.bind(1, key);
  int rc = s.step();
  if (rc == SQLITE_DONE) return makeError(ErrorCode::kNotFound, "key {} not found", key);
  if (rc != SQLITE_ROW) return sqliteError(impl_->rdb, "reading " + key);
  return KeyValue{key, s.text(0), s.i64(1), s.i64(2)};
}

base::Result<Snapshot> SqliteStore::list(const std::string& prefix, Revision at) {
  std::lock_guard g(impl_->readMu);
  // One read transaction: the items and the revision agree.
  if (auto st = exec(impl_->rdb, "BEGIN"); !st) return std::move(st).error();
  Snapshot snap;
  Stmt rev(impl_->rdb, "SELECT COALESCE((SELECT value FROM meta WHERE name = 'revision'), 0)");
  rev.step();
  snap.revision = rev.i64(0);
  Revision compacted = impl_->compacted.load();
  if (at != 0 && at <= compacted) {
    static_cast<void>(exec(impl_->rdb, "COMMIT"));  // read-only: nothing to lose
    return makeError(ErrorCode::kOutOfRange, "revision {} is compacted (oldest kept: {})", at, compacted + 1);
  }
  if (at != 0 && at > snap.revision) {
    static_cast<void>(exec(impl_->rdb, "COMMIT"));  // read-only: nothing to lose
    return makeError(ErrorCode::kOutOfRange, "revision {} is in the future (current: {})", at, snap.revision);
  }
  std::string end = prefixEnd(prefix);
  Stmt s;
  if (at == 0) {
    s = Stmt(impl_->rdb,
             "SELECT kv.key, log.value, log.create_rev, kv.rev FROM kv JOIN log ON log.rev = kv.rev "
             "WHERE kv.key >= ? AND kv.key < ? ORDER BY kv.key");
    s.bind(1, prefix).bind(2, end);
  } else {
    s = Stmt(impl_->rdb,
             "SELECT l.key, l.value, l.create_rev, l.rev FROM log l JOIN "
             "(SELECT key, MAX(rev) AS r FROM log WHERE key >= ?1 AND key < ?2 AND rev <= ?3 GROUP BY key) m "
             "ON l.rev = m.r WHERE l.deleted = 0 ORDER BY l.key");
    s.bind(1, prefix).bind(2, end).bind(3, at);
    snap.revision = at;
  }
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) snap.items.push_back(KeyValue{s.text(0), s.text(1), s.i64(2), s.i64(3)});
  base::Status ended = exec(impl_->rdb, "COMMIT");
  if (rc != SQLITE_DONE) return sqliteError(impl_->rdb, "listing " + prefix);
  if (!ended) return std::move(ended).error();
  return snap;
}

base::Result<std::vector<Event>> SqliteStore::eventsSince(Revision after, size_t max) {
  Revision compacted = impl_->compacted.load();
  if (after < compacted) {
    return makeError(ErrorCode::kOutOfRange, "revision {} is compacted (oldest kept: {})", after, compacted + 1);
  }
  std::lock_guard g(impl_->readMu);
  Stmt s(impl_->rdb, "SELECT rev, key, value, create_rev, deleted FROM log WHERE rev > ? ORDER BY rev LIMIT ?");
  s.bind(1, after).bind(2, static_cast<int64_t>(max));
  std::vector<Event> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) {
    Event e;
    e.type = s.i64(4) ? Event::Type::kDelete : Event::Type::kPut;
    e.kv = KeyValue{s.text(1), s.text(2), s.i64(3), s.i64(0)};
    e.created = e.type == Event::Type::kPut && e.kv.createRevision == e.kv.modRevision;
    out.push_back(std::move(e));
  }
  if (rc != SQLITE_DONE) return sqliteError(impl_->rdb, "reading history");
  return out;
}

Revision SqliteStore::currentRevision() { return impl_->revision.load(); }
Revision SqliteStore::compactedRevision() { return impl_->compacted.load(); }
uint64_t SqliteStore::commits() const { return impl_->commits.load(); }

base::Status SqliteStore::compact(Revision upTo) {
  if (upTo <= impl_->compacted.load()) return {};
  if (upTo > impl_->revision.load()) {
    return makeError(ErrorCode::kOutOfRange, "cannot compact to {}: current revision is {}", upTo,
                     impl_->revision.load());
  }
  // Runs as a write on the commit thread's connection, serialized with commits.
  std::lock_guard g(impl_->readMu);
  sqlite3* db = impl_->rdb;
  if (auto st = exec(db, "BEGIN IMMEDIATE"); !st) return st;
  Stmt del(db,
           "DELETE FROM log WHERE rev <= ?1 AND (deleted = 1 OR rev < "
           "(SELECT MAX(rev) FROM log l2 WHERE l2.key = log.key AND l2.rev <= ?1))");
  del.bind(1, upTo);
  Stmt meta(db, "INSERT INTO meta(name, value) VALUES('compacted', ?1) ON CONFLICT(name) DO UPDATE SET value = ?1");
  meta.bind(1, upTo);
  if (del.step() != SQLITE_DONE || meta.step() != SQLITE_DONE) {
    base::Error e = sqliteError(db, "compacting");
    static_cast<void>(exec(db, "ROLLBACK"));  // already failing; nothing more to report
    return e;
  }
  if (auto st = exec(db, "COMMIT"); !st) return st;
  impl_->compacted.store(upTo);
  return {};
}

void SqliteStore::setListener(CommitListener listener) {
  std::lock_guard g(impl_->listenerMu);
  impl_->listener = std::move(listener);
}

}  // namespace trellis::apiserver::storage
