// SqliteStore on a real SQLite database in a temporary directory.
#include "apiserver-lite/storage/sqlite_store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <set>
#include <thread>

#include "common/testing/testing.h"

namespace trellis::apiserver::storage {
namespace {

base::Result<KeyValue> apply(Store& s, Write w) {
  std::promise<base::Result<KeyValue>> p;
  auto f = p.get_future();
  s.write(std::move(w), [&p](base::Result<KeyValue> r) { p.set_value(std::move(r)); });
  return f.get();
}

Write create(std::string key, std::string value) { return Write{Write::Op::kCreate, std::move(key), std::move(value), 0}; }
Write update(std::string key, std::string value, Revision expected = 0) {
  return Write{Write::Op::kUpdate, std::move(key), std::move(value), expected};
}
Write remove(std::string key, Revision expected = 0) { return Write{Write::Op::kDelete, std::move(key), "", expected}; }

class SqliteStoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<SqliteStore> openStore() {
    auto s = SqliteStore::open(dir_.file("store.db"));
    EXPECT_TRUE(s.ok()) << s.error().message();
    return std::move(*s);
  }
  testing::TempDir dir_;
};

TEST_F(SqliteStoreTest, CrudWithRevisionsAndOptimisticConcurrency) {
  auto s = openStore();
  auto a = apply(*s, create("/pods/ns/a", "v1"));
  ASSERT_TRUE(a.ok()) << a.error().message();
  EXPECT_EQ(a->modRevision, 1);
  EXPECT_EQ(a->createRevision, 1);
  EXPECT_EQ(apply(*s, create("/pods/ns/a", "again")).error().code(), base::ErrorCode::kAlreadyExists);
  auto b = apply(*s, update("/pods/ns/a", "v2", 1));
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->modRevision, 2);
  EXPECT_EQ(b->createRevision, 1);
  auto stale = apply(*s, update("/pods/ns/a", "v3", 1));
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code(), base::ErrorCode::kConflict);
  EXPECT_EQ(apply(*s, update("/pods/ns/none", "x")).error().code(), base::ErrorCode::kNotFound);
  auto got = s->get("/pods/ns/a");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->value, "v2");
  auto del = apply(*s, remove("/pods/ns/a", 2));
  ASSERT_TRUE(del.ok());
  EXPECT_EQ(del->value, "v2");  // the deleted value
  EXPECT_EQ(del->modRevision, 3);
  EXPECT_EQ(s->get("/pods/ns/a").error().code(), base::ErrorCode::kNotFound);
  EXPECT_EQ(apply(*s, remove("/pods/ns/a")).error().code(), base::ErrorCode::kNotFound);
  EXPECT_EQ(s->currentRevision(), 3);
  // Re-creating a deleted key starts a new life.
  auto again = apply(*s, create("/pods/ns/a", "new"));
  EXPECT_EQ(again->createRevision, 4);
}

TEST_F(SqliteStoreTest, ConcurrentWritersShareCommitsAndGetDistinctRevisions) {
  auto s = openStore();
  constexpr int kThreads = 8, kPer = 250;
  std::vector<std::thread> threads;
  std::mutex mu;
  std::set<Revision> revs;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPer; ++i) {
        auto r = apply(*s, create("/cm/" + std::to_string(t) + "/" + std::to_string(i), "x"));
        if (!r.ok()) {
          failures++;
          continue;
        }
        std::lock_guard g(mu);
        revs.insert(r->modRevision);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, 0);
  ASSERT_EQ(revs.size(), size_t(kThreads * kPer));
  EXPECT_EQ(*revs.begin(), 1);
  EXPECT_EQ(*revs.rbegin(), kThreads * kPer);  // contiguous: no gaps, no repeats
  EXPECT_LT(s->commits(), uint64_t(kThreads * kPer)) << "no two writes shared a commit";
  auto all = s->list("/cm/");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->items.size(), size_t(kThreads * kPer));
  EXPECT_EQ(all->revision, kThreads * kPer);
}

TEST_F(SqliteStoreTest, ListIsPrefixScopedAndAtARevision) {
  auto s = openStore();
  EXPECT_TRUE(apply(*s, create("/a/1", "one")).ok());      // rev 1
  EXPECT_TRUE(apply(*s, create("/a/2", "two")).ok());      // rev 2
  EXPECT_TRUE(apply(*s, create("/ab/1", "other")).ok());   // rev 3: not under "/a/"
  EXPECT_TRUE(apply(*s, update("/a/1", "ONE")).ok());      // rev 4
  EXPECT_TRUE(apply(*s, remove("/a/2")).ok());             // rev 5
  auto now = s->list("/a/");
  ASSERT_TRUE(now.ok());
  ASSERT_EQ(now->items.size(), 1u);
  EXPECT_EQ(now->items[0].value, "ONE");
  auto at2 = s->list("/a/", 2);
  ASSERT_TRUE(at2.ok());
  ASSERT_EQ(at2->items.size(), 2u);
  EXPECT_EQ(at2->items[0].value, "one");
  EXPECT_EQ(at2->items[1].value, "two");
  EXPECT_EQ(at2->revision, 2);
  EXPECT_EQ(s->list("/a/", 99).error().code(), base::ErrorCode::kOutOfRange);
}

TEST_F(SqliteStoreTest, HistoryReplaysEveryEventInOrderThenCompactionSaysGone) {
  auto s = openStore();
  std::vector<Event> live;
  std::mutex mu;
  s->setListener([&](const std::vector<Event>& evs) {
    std::lock_guard g(mu);
    live.insert(live.end(), evs.begin(), evs.end());
  });
  EXPECT_TRUE(apply(*s, create("/k", "a")).ok());  // 1
  EXPECT_TRUE(apply(*s, update("/k", "b")).ok());  // 2
  EXPECT_TRUE(apply(*s, remove("/k")).ok());       // 3
  EXPECT_TRUE(apply(*s, create("/j", "c")).ok());  // 4
  auto h = s->eventsSince(0, 100);
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h->size(), 4u);
  EXPECT_TRUE((*h)[0].created);
  EXPECT_FALSE((*h)[1].created);
  EXPECT_EQ((*h)[2].type, Event::Type::kDelete);
  EXPECT_EQ((*h)[2].kv.value, "b");
  EXPECT_EQ((*h)[2].kv.modRevision, 3);
  ASSERT_EQ(live.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(live[i].kv.modRevision, (*h)[i].kv.modRevision);
    EXPECT_EQ(live[i].type, (*h)[i].type);
  }
  ASSERT_TRUE(s->compact(3).ok());
  EXPECT_EQ(s->eventsSince(1, 100).error().code(), base::ErrorCode::kOutOfRange);
  auto after = s->eventsSince(3, 100);
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->size(), 1u);
  EXPECT_EQ((*after)[0].kv.key, "/j");
  EXPECT_EQ(s->list("/", 2).error().code(), base::ErrorCode::kOutOfRange);
  auto cur = s->list("/");
  ASSERT_TRUE(cur.ok());
  EXPECT_EQ(cur->items.size(), 1u);
}

TEST_F(SqliteStoreTest, CompactionKeepsWhatLaterRevisionsNeed) {
  auto s = openStore();
  EXPECT_TRUE(apply(*s, create("/x", "1")).ok());  // 1
  EXPECT_TRUE(apply(*s, create("/y", "1")).ok());  // 2
  EXPECT_TRUE(apply(*s, update("/x", "2")).ok());  // 3
  ASSERT_TRUE(s->compact(2).ok());
  // At revision 2 and later, /y's row from revision 2 is still needed.
  auto at2 = s->list("/", 3);
  ASSERT_TRUE(at2.ok());
  ASSERT_EQ(at2->items.size(), 2u);
  EXPECT_EQ(at2->items[0].value, "2");
  EXPECT_EQ(at2->items[1].value, "1");
}

TEST_F(SqliteStoreTest, ReopenRestoresStateAndRevision) {
  {
    auto s = openStore();
    EXPECT_TRUE(apply(*s, create("/a", "1")).ok());
    EXPECT_TRUE(apply(*s, create("/b", "2")).ok());
    EXPECT_TRUE(apply(*s, remove("/a")).ok());
    ASSERT_TRUE(s->compact(2).ok());
  }
  auto s = openStore();
  EXPECT_EQ(s->currentRevision(), 3);
  EXPECT_EQ(s->compactedRevision(), 2);
  EXPECT_EQ(s->get("/b")->value, "2");
  EXPECT_EQ(apply(*s, create("/b", "x")).error().code(), base::ErrorCode::kAlreadyExists);
  EXPECT_EQ(apply(*s, create("/c", "3"))->modRevision, 4);
}

TEST_F(SqliteStoreTest, BadPathIsAClearError) {
  auto s = SqliteStore::open(dir_.file("no/such/dir/store.db"));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("no/such/dir/store.db"), std::string::npos) << s.error().message();
}

// kill -9 of a process in the middle of writing: after reopening, every write
// it had acknowledged (reported through a pipe only after `done`) is there.
TEST_F(SqliteStoreTest, KillNineLosesNoAcknowledgedWrite) {
  for (int round = 0; round < 3; ++round) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    pid_t child = fork();
    if (child == 0) {
      close(fds[0]);
      auto s = SqliteStore::open(dir_.file("store.db"));
      if (!s.ok()) _exit(2);
      std::atomic<int> next{0};
      std::vector<std::thread> writers;
      for (int t = 0; t < 4; ++t) {
        writers.emplace_back([&, t] {
          for (;;) {
            std::string key = "/r" + std::to_string(round) + "/" + std::to_string(t) + "/" + std::to_string(next++);
            auto r = apply(**s, create(key, std::string(200, 'v')));
            if (!r.ok()) _exit(3);
            std::string line = key + "\n";
            if (write(fds[1], line.data(), line.size()) < 0) _exit(4);
          }
        });
      }
      for (auto& w : writers) w.join();
      _exit(0);
    }
    close(fds[1]);
    // Killed once it has acknowledged a number of writes (more each round),
    // while its four writers are still writing — whatever the machine's speed.
    std::string acked;
    size_t want = 20 + 20 * static_cast<size_t>(round);
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    char buf[4096];
    while (static_cast<size_t>(std::count(acked.begin(), acked.end(), '\n')) < want &&
           std::chrono::steady_clock::now() < until) {
      ssize_t n = read(fds[0], buf, sizeof buf);
      if (n <= 0) break;
      acked.append(buf, static_cast<size_t>(n));
    }
    kill(child, SIGKILL);
    int status;
    waitpid(child, &status, 0);
    for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) acked.append(buf, static_cast<size_t>(n));
    close(fds[0]);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the writer exited on its own: " << status;
    auto s = openStore();
    size_t count = 0;
    for (size_t pos = 0, nl; (nl = acked.find('\n', pos)) != std::string::npos; pos = nl + 1) {
      std::string key = acked.substr(pos, nl - pos);
      ++count;
      ASSERT_TRUE(s->get(key).ok()) << "acknowledged " << key << " is missing after kill -9";
    }
    EXPECT_GE(count, want) << "the writer never got going";
    // Revisions stayed consistent: the store still accepts writes at the next revision.
    Revision before = s->currentRevision();
    EXPECT_EQ(apply(*s, create("/after-crash-" + std::to_string(round), "x"))->modRevision, before + 1);
  }
}

}  // namespace
}  // namespace trellis::apiserver::storage
