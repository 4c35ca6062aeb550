#include "apiserver-lite/storage/watch_cache.h"

#include <gtest/gtest.h>

#include <future>
#include <random>
#include <thread>

#include "apiserver-lite/storage/sqlite_store.h"
#include "common/testing/testing.h"

namespace trellis::apiserver::storage {
namespace {

base::Result<KeyValue> apply(Store& s, Write::Op op, std::string key, std::string value = "v") {
  std::promise<base::Result<KeyValue>> p;
  auto f = p.get_future();
  s.write(Write{op, std::move(key), std::move(value), 0}, [&p](base::Result<KeyValue> r) { p.set_value(std::move(r)); });
  return f.get();
}

class WatchCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = SqliteStore::open(dir_.file("db"));
    ASSERT_TRUE(s.ok()) << s.error().message();
    store_ = std::move(*s);
  }
  testing::TempDir dir_;
  std::unique_ptr<SqliteStore> store_;
};

TEST_F(WatchCacheTest, ListsAndGetsFollowCommits) {
  EXPECT_TRUE(apply(*store_, Write::Op::kCreate, "/cm/a", "1").ok());
  WatchCache cache(*store_);
  ASSERT_TRUE(cache.start().ok());
  EXPECT_EQ(cache.list("/cm/").items.size(), 1u);
  EXPECT_TRUE(apply(*store_, Write::Op::kCreate, "/cm/b", "2").ok());
  EXPECT_TRUE(apply(*store_, Write::Op::kUpdate, "/cm/a", "1b").ok());
  EXPECT_TRUE(apply(*store_, Write::Op::kCreate, "/cmx/c", "3").ok());  // not under "/cm/"
  Snapshot s = cache.list("/cm/");
  ASSERT_EQ(s.items.size(), 2u);
  EXPECT_EQ(s.items[0].value, "1b");
  EXPECT_EQ(s.revision, 4);
  EXPECT_TRUE(apply(*store_, Write::Op::kDelete, "/cm/a").ok());
  EXPECT_EQ(cache.get("/cm/a").error().code(), base::ErrorCode::kNotFound);
  EXPECT_EQ(cache.get("/cm/b")->value, "2");
}

TEST_F(WatchCacheTest, WatchReplaysThenStreamsWithoutGapOrRepeat) {
  WatchCache cache(*store_, 1000);
  ASSERT_TRUE(cache.start().ok());
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(apply(*store_, Write::Op::kCreate, "/p/" + std::to_string(i)).ok());
  // Writers are committing while the watch registers: the replay/live handoff
  // must neither drop nor repeat an event.
  std::atomic<bool> go{false};
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      while (!go) std::this_thread::yield();
      for (int i = 0; i < 100; ++i) EXPECT_TRUE(apply(*store_, Write::Op::kCreate, "/p/w" + std::to_string(t) + "-" + std::to_string(i)).ok());
    });
  }
  go = true;
  while (cache.revision() < 60) std::this_thread::yield();
  Revision from = cache.revision() - 20;
  std::mutex mu;
  std::vector<Revision> seen;
  auto id = cache.watch("/p/", from, [&](const std::vector<Event>& evs) {
    std::lock_guard g(mu);
    for (const Event& e : evs) seen.push_back(e.kv.modRevision);
  });
  ASSERT_TRUE(id.ok());
  for (auto& w : writers) w.join();
  std::lock_guard g(mu);
  ASSERT_EQ(seen.size(), size_t(410 - from));
  for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], Revision(from + 1 + i)) << "at " << i;
  cache.unwatch(*id);
  EXPECT_EQ(cache.watchers(), 0u);
}

TEST_F(WatchCacheTest, OlderThanTheRingReplaysFromTheStoreAndCompactedIsGone) {
  WatchCache cache(*store_, 3);  // a tiny ring
  ASSERT_TRUE(cache.start().ok());
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(apply(*store_, Write::Op::kCreate, "/k/" + std::to_string(i)).ok());
  std::vector<Revision> seen;
  auto id = cache.watch("/k/", 2, [&](const std::vector<Event>& evs) {
    for (const Event& e : evs) seen.push_back(e.kv.modRevision);
  });
  ASSERT_TRUE(id.ok()) << id.error().message();
  ASSERT_EQ(seen.size(), 8u);
  EXPECT_EQ(seen.front(), 3);
  EXPECT_EQ(seen.back(), 10);
  cache.unwatch(*id);
  ASSERT_TRUE(store_->compact(6).ok());
  auto gone = cache.watch("/k/", 4, [](const std::vector<Event>&) {});
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code(), base::ErrorCode::kOutOfRange);
  EXPECT_EQ(cache.watch("/k/", 99, [](const std::vector<Event>&) {}).error().code(), base::ErrorCode::kOutOfRange);
}

// The cache equals the store after a random mix of writes from several threads.
TEST_F(WatchCacheTest, CacheEqualsStoreAfterRandomWrites) {
  WatchCache cache(*store_, 100);
  ASSERT_TRUE(cache.start().ok());
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 500; ++i) {
        std::string key = "/r/" + std::to_string(rng() % 50);
        auto op = static_cast<Write::Op>(rng() % 3);
        static_cast<void>(apply(*store_, op, key, std::to_string(i)));  // conflicts and not-founds are fine
      }
    });
  }
  for (auto& w : writers) w.join();
  Snapshot fromCache = cache.list("/r/");
  auto fromStore = store_->list("/r/");
  ASSERT_TRUE(fromStore.ok());
  EXPECT_EQ(fromCache.revision, fromStore->revision);
  ASSERT_EQ(fromCache.items.size(), fromStore->items.size());
  for (size_t i = 0; i < fromCache.items.size(); ++i) {
    EXPECT_EQ(fromCache.items[i].key, fromStore->items[i].key);
    EXPECT_EQ(fromCache.items[i].value, fromStore->items[i].value);
    EXPECT_EQ(fromCache.items[i].modRevision, fromStore->items[i].modRevision);
  }
}

}  // namespace
}  // namespace trellis::apiserver::storage
