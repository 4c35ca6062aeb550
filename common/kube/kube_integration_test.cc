// common/kube against a real trellis-apiserver process: informers under
// concurrent writers, a server killed mid-watch, compaction (410) and
// relist, the work queue, and leader election between processes.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <boost/json/serialize.hpp>

#include "common/http/server.h"
#include "common/kube/client.h"
#include "common/kube/config.h"
#include "common/kube/controller.h"
#include "common/kube/events.h"
#include "common/kube/informer.h"
#include "common/kube/leader.h"
#include "common/kube/workqueue.h"
#include "common/testing/apiserver_process.h"
#include "common/testing/background.h"
#include "common/testing/testing.h"

namespace trellis::kube {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;


class KubeTest : public ::testing::Test {
 protected:
  void startServer(std::vector<std::string> args = {}) {
    ASSERT_TRUE(server_.start(args, port_)) << server_.log();
  }
  std::unique_ptr<Client> newClient(ClientOptions o = {}) {
    auto cfg = loadKubeconfig({server_.kubeconfig()});
    EXPECT_TRUE(cfg) << (cfg ? "" : cfg.error().message());
    auto c = Client::create(*cfg, o);
    EXPECT_TRUE(c);
    return std::move(*c);
  }
  json::object configMap(const std::string& name, const std::string& value) {
    return json::object{{"metadata", json::object{{"name", name}, {"namespace", "default"}}},
                        {"data", json::object{{"v", value}}}};
  }
  // name -> resourceVersion of a fresh LIST.
  std::map<std::string, std::string> freshList(Client& c) {
    auto l = c.listAll(resources::kConfigMaps, "default", {});
    EXPECT_TRUE(l);
    std::map<std::string, std::string> out;
    for (auto& o : l->items) out[std::string(objectName(o))] = std::string(objectResourceVersion(o));
    return out;
  }
  std::map<std::string, std::string> cacheView(const Informer& inf) {
    std::map<std::string, std::string> out;
    for (auto& o : inf.list()) out[std::string(objectName(*o))] = std::string(objectResourceVersion(*o));
    return out;
  }

  testing::TempDir dir_;
  int port_ = testing::freeTcpPort();
  testing::ApiServerProcess server_{TRELLIS_APISERVER_BIN, dir_.path()};
};

// What the handlers were told, applied to a map: must end equal to the server.
struct HandlerView {
  std::mutex mu;
  std::map<std::string, std::string> objects;  // name -> rv
  int duplicates = 0;                          // an add for a known object, a delete for an unknown one
  EventHandler handler() {
    return {.onAdd =
                [this](const ObjectPtr& o) {
                  std::lock_guard g(mu);
                  duplicates += objects.count(std::string(objectName(*o)));
                  objects[std::string(objectName(*o))] = std::string(objectResourceVersion(*o));
                },
            .onUpdate =
                [this](const ObjectPtr&, const ObjectPtr& n) {
                  std::lock_guard g(mu);
                  objects[std::string(objectName(*n))] = std::string(objectResourceVersion(*n));
                },
            .onDelete =
                [this](const ObjectPtr& o) {
                  std::lock_guard g(mu);
                  duplicates += objects.erase(std::string(objectName(*o))) == 0;
                }};
  }
  std::map<std::string, std::string> snapshot() {
    std::lock_guard g(mu);
    return objects;
  }
};

TEST_F(KubeTest, ClientVerbsAndTypedErrors) {
  startServer();
  auto c = newClient();
  auto created = c->create(resources::kConfigMaps, "default", configMap("a", "1"));
  ASSERT_TRUE(created) << created.error().message();
  auto again = c->create(resources::kConfigMaps, "default", configMap("a", "1"));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), base::ErrorCode::kAlreadyExists);
  auto missing = c->get(resources::kConfigMaps, "default", "nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), base::ErrorCode::kNotFound);
  EXPECT_EQ(missing.error().message(), "configmaps \"nope\" not found");
  json::object stale = *created;
  json::object fresh = *created;
  fresh["data"].as_object()["v"] = "2";
  ASSERT_TRUE(c->update(resources::kConfigMaps, fresh));
  stale["data"].as_object()["v"] = "3";
  auto conflict = c->update(resources::kConfigMaps, stale);  // the old resourceVersion
  ASSERT_FALSE(conflict);
  EXPECT_EQ(conflict.error().code(), base::ErrorCode::kConflict);
  auto patched = c->patch(resources::kConfigMaps, "default", "a", PatchType::kMerge, R"({"data":{"w":"x"}})");
  ASSERT_TRUE(patched) << patched.error().message();
  EXPECT_EQ(json::serialize(patched->at("data")), R"({"v":"2","w":"x"})");
  auto invalid = c->create(resources::kConfigMaps, "default", configMap("Bad_Name", "1"));
  ASSERT_FALSE(invalid);
  EXPECT_EQ(invalid.error().code(), base::ErrorCode::kInvalidArgument);
  ASSERT_TRUE(c->remove(resources::kConfigMaps, "default", "a"));
  EXPECT_EQ(c->get(resources::kConfigMaps, "default", "a").error().code(), base::ErrorCode::kNotFound);
  // Pages through continue tokens.
  for (int i = 0; i < 25; ++i) ASSERT_TRUE(c->create(resources::kConfigMaps, "default", configMap("p" + std::to_string(i), "")));
  auto all = c->listAll(resources::kConfigMaps, "default", {}, 7);
  ASSERT_TRUE(all);
  EXPECT_EQ(all->items.size(), 25u);
}

TEST_F(KubeTest, InformerCacheEqualsAFreshListAfterTenThousandRandomWrites) {
  startServer();
  auto c = newClient({.qps = 0});
  Informer inf(*c, resources::kConfigMaps, {.ns = "default"});
  HandlerView view;
  inf.addHandler(view.handler());
  inf.addIndex("value", [](const json::object& o) {
    const json::value* d = o.if_contains("data");
    const json::value* v = d && d->is_object() ? d->get_object().if_contains("v") : nullptr;
    return v && v->is_string() ? std::vector<std::string>{std::string(v->get_string())} : std::vector<std::string>{};
  });
  inf.start();
  ASSERT_TRUE(inf.waitForSync(30s));
  std::vector<std::thread> writers;
  // Every write's answer is tallied: applied, or the one refusal its race
  // allows (create of a name that exists, patch or delete of one that does
  // not); anything else is a failure of the client or the server.
  std::atomic<int> applied[3] = {0, 0, 0}, refused{0}, failed{0};
  std::mutex failMu;
  std::string firstFailure;
  for (int w = 0; w < 4; ++w) {
    writers.emplace_back([&, w] {
      auto client = newClient({.qps = 0});
      std::mt19937 rng(static_cast<unsigned>(w));
      auto tally = [&](bool ok, const base::Error* err, base::ErrorCode allowed, int op) {
        if (ok) {
          ++applied[op];
        } else if (err->code() == allowed) {
          ++refused;
        } else {
          ++failed;
          std::lock_guard g(failMu);
          if (firstFailure.empty()) firstFailure = err->message();
        }
      };
      for (int i = 0; i < 2500; ++i) {
        std::string name = "w" + std::to_string(w) + "-" + std::to_string(rng() % 200);
        switch (int op = static_cast<int>(rng() % 3)) {
          case 0: {
            auto r = client->create(resources::kConfigMaps, "default", configMap(name, std::to_string(i % 7)));
            tally(r.ok(), r ? nullptr : &r.error(), base::ErrorCode::kAlreadyExists, op);
            break;
          }
          case 1: {
            auto r = client->patch(resources::kConfigMaps, "default", name, PatchType::kMerge,
                                   R"({"data":{"v":")" + std::to_string(i % 7) + "\"}}");
            tally(r.ok(), r ? nullptr : &r.error(), base::ErrorCode::kNotFound, op);
            break;
          }
          default: {
            auto r = client->remove(resources::kConfigMaps, "default", name);
            tally(r.ok(), r ? nullptr : &r.error(), base::ErrorCode::kNotFound, op);
          }
        }
      }
    });
  }
  for (auto& t : writers) t.join();
  EXPECT_EQ(failed.load(), 0) << firstFailure;
  // Each kind of write changed the store many times (the informer had real work).
  for (int op = 0; op < 3; ++op) EXPECT_GT(applied[op].load(), 1000) << "op " << op;
  EXPECT_EQ(applied[0] + applied[1] + applied[2] + refused + failed, 10000);
  auto want = freshList(*c);
  ASSERT_TRUE(testing::waitFor([&] { return cacheView(inf) == want; }, 30s))
      << "cache " << cacheView(inf).size() << " vs list " << want.size();
  EXPECT_TRUE(testing::waitFor([&] { return view.snapshot() == want; }, 30s));
  EXPECT_EQ(view.duplicates, 0);
  // The index agrees with the objects.
  size_t indexed = 0;
  for (int v = 0; v < 7; ++v) indexed += inf.byIndex("value", std::to_string(v)).size();
  EXPECT_EQ(indexed, want.size());
  EXPECT_EQ(inf.stats().lists, 1u);  // one LIST; the rest came by watch
}

TEST_F(KubeTest, KilledServerMidWatchEndsWithACorrectCache) {
  startServer();
  auto c = newClient({.qps = 0, .maxRetries = 2, .initialBackoff = 50ms});
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(c->create(resources::kConfigMaps, "default", configMap("k" + std::to_string(i), "a")));
  Informer inf(*c, resources::kConfigMaps, {.ns = "default"});
  HandlerView view;
  inf.addHandler(view.handler());
  inf.start();
  ASSERT_TRUE(inf.waitForSync(30s));
  server_.stop(SIGKILL);
  startServer();  // same port, same data
  // Changes made while the informer reconnects: updates, deletes, new objects.
  auto c2 = newClient();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(c2->remove(resources::kConfigMaps, "default", "k" + std::to_string(i)));
  for (int i = 10; i < 20; ++i) {
    ASSERT_TRUE(c2->patch(resources::kConfigMaps, "default", "k" + std::to_string(i), PatchType::kMerge, R"({"data":{"v":"b"}})"));
  }
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(c2->create(resources::kConfigMaps, "default", configMap("n" + std::to_string(i), "c")));
  auto want = freshList(*c2);
  ASSERT_EQ(want.size(), 15u);
  ASSERT_TRUE(testing::waitFor([&] { return cacheView(inf) == want; }, 20s)) << server_.log();
  EXPECT_TRUE(testing::waitFor([&] { return view.snapshot() == want; }, 30s));
  EXPECT_EQ(view.duplicates, 0);
  // It watches again after the kill (the relist that mended the cache comes
  // first; the new watch follows it).
  EXPECT_TRUE(testing::waitFor([&] { return inf.stats().watches >= 2u; }, 30s)) << inf.stats().watches;
}

TEST_F(KubeTest, CompactionGivesGoneAndACleanRelist) {
  startServer({"--compaction-interval", "0.3"});
  auto c = newClient({.qps = 0});
  ASSERT_TRUE(c->create(resources::kNamespaces, "", json::object{{"metadata", json::object{{"name", "busy"}}}}));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(c->create(resources::kConfigMaps, "default", configMap("g" + std::to_string(i), "x")));
  // Watches of 1 s without bookmarks: when one ends, the informer resumes
  // from the revision of the last event it saw in "default".
  Informer inf(*c, resources::kConfigMaps, {.ns = "default", .watchTimeoutSeconds = 1, .bookmarks = false});
  HandlerView view;
  inf.addHandler(view.handler());
  inf.start();
  ASSERT_TRUE(inf.waitForSync(30s));
  // Writes elsewhere move the revision on and compaction passes the
  // informer's: its next resume gets 410 Gone, and it relists.
  for (int i = 0; i < 50; ++i) {
    json::object cm = configMap("b" + std::to_string(i), "y");
    cm["metadata"].as_object()["namespace"] = "busy";
    ASSERT_TRUE(c->create(resources::kConfigMaps, "busy", cm));
  }
  ASSERT_TRUE(testing::waitFor([&] { return inf.stats().gone >= 1; }, 30s)) << "no 410 seen";
  ASSERT_TRUE(c->remove(resources::kConfigMaps, "default", "g0"));  // after the relist, still seen
  auto want = freshList(*c);
  ASSERT_TRUE(testing::waitFor([&] { return cacheView(inf) == want; }, 30s));
  EXPECT_TRUE(testing::waitFor([&] { return view.snapshot() == want; }, 30s));
  EXPECT_EQ(view.duplicates, 0);
  EXPECT_GE(inf.stats().lists, 2u);  // relisted after the 410
}

TEST_F(KubeTest, AnInformerThatKeepsOnlyIdentitiesListsInPagesAndStillTellsEverything) {
  startServer({"--compaction-interval", "0.3"});
  auto c = newClient({.qps = 0});
  ASSERT_TRUE(c->create(resources::kNamespaces, "", json::object{{"metadata", json::object{{"name", "busy"}}}}));
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(c->create(resources::kConfigMaps, "default", configMap("k" + std::to_string(i), "x")));
  Informer inf(*c, resources::kConfigMaps,
               {.ns = "default", .pageSize = 3, .watchTimeoutSeconds = 1, .bookmarks = false, .keepObjects = false});
  HandlerView view;
  std::atomic<int> fullAdds{0};
  inf.addHandler(view.handler());
  inf.addHandler({.onAdd = [&](const ObjectPtr& o) { fullAdds += o->contains("data"); }});
  inf.start();
  ASSERT_TRUE(inf.waitForSync(30s));
  EXPECT_EQ(fullAdds, 10) << "handlers get whole objects";
  auto want = freshList(*c);
  EXPECT_EQ(cacheView(inf), want);  // four pages of three, reconciled as one list
  EXPECT_EQ(view.snapshot(), want);
  for (auto& o : inf.list()) EXPECT_FALSE(o->contains("data")) << "the cache keeps identities only";
  // Changes through the watch, and a delete seen only by a relist after 410 Gone.
  ASSERT_TRUE(c->update(resources::kConfigMaps, configMap("k1", "y")));
  ASSERT_TRUE(c->remove(resources::kConfigMaps, "default", "k2"));
  ASSERT_TRUE(testing::waitFor([&] { return view.snapshot() == freshList(*c); }, 30s));
  for (int i = 0; i < 50; ++i) {
    json::object cm = configMap("b" + std::to_string(i), "y");
    cm["metadata"].as_object()["namespace"] = "busy";
    ASSERT_TRUE(c->create(resources::kConfigMaps, "busy", cm));
  }
  ASSERT_TRUE(testing::waitFor([&] { return inf.stats().gone >= 1; }, 30s)) << "no 410 seen";
  ASSERT_TRUE(c->remove(resources::kConfigMaps, "default", "k3"));
  want = freshList(*c);
  ASSERT_TRUE(testing::waitFor([&] { return cacheView(inf) == want && view.snapshot() == want; }, 30s));
  EXPECT_EQ(view.duplicates, 0);
}

TEST_F(KubeTest, WorkQueueDeduplicatesAndNeverHandsAKeyToTwoWorkers) {
  // Deduplication: 502 adds of 11 keys before any worker runs wait as 11
  // items, and each is processed exactly once. A key added again while a
  // worker holds it ("again") is processed once more, after it is done.
  {
    WorkQueue q(1ms, 50ms);
    for (int round = 0; round < 50; ++round) {
      for (int k = 0; k < 10; ++k) q.add("k" + std::to_string(k));
    }
    q.add("x");
    q.add("x");
    q.add("again");
    EXPECT_EQ(q.length(), 12u);
    std::mutex mu;
    std::map<std::string, int> times;
    std::thread worker([&] {
      while (auto key = q.get()) {
        int n;
        {
          std::lock_guard g(mu);
          n = ++times[*key];
        }
        if (*key == "again" && n == 1) q.add("again");  // an update arrives mid-reconcile
        q.done(*key);
      }
    });
    ASSERT_TRUE(testing::waitFor([&] { std::lock_guard g(mu); return times["again"] == 2; }, 30s));
    q.shutDownWithDrain();
    worker.join();
    for (int k = 0; k < 10; ++k) EXPECT_EQ(times["k" + std::to_string(k)], 1) << "k" << k;
    EXPECT_EQ(times["x"], 1);
    EXPECT_EQ(times["again"], 2);
  }
  // Exclusivity: four workers, keys re-added all the while; no key is ever
  // held by two workers at once, and every key is processed after its last add.
  WorkQueue q(1ms, 50ms);
  std::mutex mu;
  std::set<std::string> inFlight;
  std::map<std::string, int> afterLastAdd;
  std::atomic<int> overlaps{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&] {
      while (auto key = q.get()) {
        {
          std::lock_guard g(mu);
          if (!inFlight.insert(*key).second) ++overlaps;
          ++afterLastAdd[*key];
        }
        std::this_thread::sleep_for(1ms);  // work that takes time, so adds land mid-work
        {
          std::lock_guard g(mu);
          inFlight.erase(*key);
        }
        q.done(*key);
      }
    });
  }
  for (int round = 0; round < 200; ++round) {
    for (int k = 0; k < 10; ++k) {
      std::string key = "k" + std::to_string(k);
      {
        std::lock_guard g(mu);
        afterLastAdd[key] = 0;
      }
      q.add(key);
    }
  }
  q.addRateLimited("slow");
  q.addRateLimited("slow");
  EXPECT_EQ(q.numRequeues("slow"), 2);
  q.forget("slow");
  EXPECT_EQ(q.numRequeues("slow"), 0);
  ASSERT_TRUE(testing::waitFor([&] {
    std::lock_guard g(mu);
    for (int k = 0; k < 10; ++k) {
      if (afterLastAdd["k" + std::to_string(k)] == 0) return false;
    }
    return afterLastAdd["slow"] > 0;
  }, 30s)) << "a key added was never processed afterwards";
  q.shutDownWithDrain();
  for (auto& t : workers) t.join();
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_FALSE(q.get().has_value());
}

// A candidate in a child process: prints "leading <id>" lines to a file while
// it leads. Killed -9 by the test.
pid_t candidate(const std::string& kubeconfig, const std::string& id, const std::string& out) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  auto cfg = loadKubeconfig({kubeconfig});
  auto client = Client::create(*cfg, {.qps = 0});
  LeaderElector le(**client, {.ns = "default",
                              .name = "trellis-test",
                              .identity = id,
                              .leaseDuration = 2000ms,
                              .renewDeadline = 1500ms,
                              .retryPeriod = 200ms});
  le.run([&](std::stop_token st) {
    while (!st.stop_requested()) {
      FILE* f = fopen(out.c_str(), "a");
      if (f) {
        fprintf(f, "%s %lld\n", id.c_str(),
                static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count()));
        fclose(f);
      }
      std::this_thread::sleep_for(50ms);
    }
  });
  _exit(0);
}

TEST_F(KubeTest, LeaderElectionHasOneLeaderAndHandsOverAfterKillNine) {
  startServer();
  std::string log = dir_.file("leading.log");
  pid_t a = candidate(server_.kubeconfig(), "a", log);
  pid_t b = candidate(server_.kubeconfig(), "b", log);
  auto lines = [&] {
    std::string t = testing::readFile(log);
    return static_cast<size_t>(std::count(t.begin(), t.end(), '\n'));
  };
  // A leader that has written several lines (renewed at least once) has settled.
  ASSERT_TRUE(testing::waitFor([&] { return lines() >= 10; }, 20s));
  std::string first = testing::readFile(log).substr(0, 1);
  pid_t leader = first == "a" ? a : b;
  pid_t other = first == "a" ? b : a;
  auto killedAt = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  kill(leader, SIGKILL);
  waitpid(leader, nullptr, 0);
  auto deadAt = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  std::string second = first == "a" ? "b" : "a";
  ASSERT_TRUE(testing::waitFor([&] { return testing::readFile(log).find(second + " ") != std::string::npos; }, 20s));
  size_t handedOver = lines();
  ASSERT_TRUE(testing::waitFor([&] { return lines() >= handedOver + 5; }, 20s));  // the second leads on
  kill(other, SIGKILL);
  waitpid(other, nullptr, 0);
  // Exactly one leader at any time: the lines of a stop before b's start, and
  // the handover came within the lease duration (+ a retry period and slack).
  std::string text = testing::readFile(log);
  long long lastFirst = 0, firstSecond = 0;
  bool switched = false;
  for (size_t pos = 0, nl; (nl = text.find('\n', pos)) != std::string::npos; pos = nl + 1) {
    std::string line = text.substr(pos, nl - pos);
    std::string who = line.substr(0, 1);
    long long t = 0;
    std::from_chars(line.data() + 2, line.data() + line.size(), t);
    if (who == first) {
      EXPECT_FALSE(switched) << "the first leader wrote after the second began:\n" << text;
      lastFirst = t;
    } else {
      if (!switched) firstSecond = t;
      switched = true;
    }
  }
  EXPECT_TRUE(switched);
  EXPECT_LE(lastFirst, deadAt) << "a line of the killed leader after its death";
  // Not before the lease could expire (no split brain), and in bounded time
  // even on a loaded machine (how fast it is, is a benchmark's question).
  EXPECT_GE(firstSecond, killedAt) << text;
  EXPECT_LT(firstSecond - killedAt, 15000) << text;
}

TEST_F(KubeTest, KubectlLiteGetsWatchesAndLeads) {
  startServer();
  std::string k = std::string(TRELLIS_KUBECTL_LITE_BIN) + " --kubeconfig " + server_.kubeconfig() + " ";
  auto ns = testing::run(k + "get ns default");
  EXPECT_EQ(ns.exitCode, 0);
  EXPECT_NE(ns.out.find(R"("name":"default")"), std::string::npos) << ns.out;
  auto missing = testing::run(k + "get cm nope -n default");
  EXPECT_NE(missing.exitCode, 0);
  EXPECT_NE(missing.out.find("configmaps \"nope\" not found"), std::string::npos) << missing.out;
  // watch: a marker made first shows the watch is listing; then the changes, in order.
  auto c = newClient();
  ASSERT_TRUE(c->create(resources::kConfigMaps, "default", configMap("marker", "0")));
  {
    testing::Background watch(k + "watch cm -n default");
    ASSERT_TRUE(watch.waitForLine([](const std::string& l) { return l.starts_with("ADDED default/marker "); }, 30s))
        << watch.output();
    ASSERT_TRUE(c->create(resources::kConfigMaps, "default", configMap("seen", "1")));
    ASSERT_TRUE(c->patch(resources::kConfigMaps, "default", "seen", PatchType::kMerge, R"({"data":{"v":"2"}})"));
    ASSERT_TRUE(c->remove(resources::kConfigMaps, "default", "seen"));
    ASSERT_TRUE(watch.waitForLine([](const std::string& l) { return l.starts_with("DELETED default/seen "); }, 30s))
        << watch.output();
    watch.stop(SIGTERM);
    std::vector<std::string> seen;
    for (const std::string& l : watch.lines()) {
      if (l.find(" default/seen ") != std::string::npos) seen.push_back(l.substr(0, l.rfind(' ')));  // without the revision
    }
    EXPECT_EQ(seen, (std::vector<std::string>{"ADDED default/seen", "MODIFIED default/seen", "DELETED default/seen"}));
  }
  // lead: takes the free Lease (the API shows it as holder), and lets go on SIGTERM.
  testing::Background lead("exec " + k + "lead lite-lease --identity one -n default 2>/dev/null");  // stdout only
  ASSERT_TRUE(lead.waitForLine([](const std::string& l) { return l == "leading as one"; }, 30s)) << lead.output();
  auto lease = c->get(resources::kLeases, "default", "lite-lease");
  ASSERT_TRUE(lease) << lease.error().message();
  const json::value* holder = lease->at("spec").as_object().if_contains("holderIdentity");
  ASSERT_TRUE(holder && holder->is_string());
  EXPECT_EQ(holder->get_string(), "one");
  EXPECT_EQ(lead.stop(SIGTERM), 0) << lead.output();
  EXPECT_EQ(lead.lines(), (std::vector<std::string>{"leading as one", "stopped leading"}));
}

TEST_F(KubeTest, ControllerReconcilesRequeuesFailuresAndRecordsAggregatedEvents) {
  startServer();
  auto c = newClient({.qps = 0});
  SharedInformers informers(*c);
  auto cms = informers.get(resources::kConfigMaps, "default");
  EXPECT_EQ(informers.get(resources::kConfigMaps, "default"), cms);  // shared: one per resource and namespace
  EventRecorder events(*c, {.component = "test-controller"});
  base::Registry metrics;
  std::mutex mu;
  std::map<std::string, int> reconciles;
  std::string steadySaw;  // the data "steady" had when last reconciled
  int steadyEvents = 0;   // events recorded for it
  Controller ctl({.name = "test", .workers = 2, .metrics = &metrics}, [&](const std::string& key) -> base::Status {
    int n;
    {
      std::lock_guard g(mu);
      n = ++reconciles[key];
    }
    if (key == "default/flaky" && n == 1) return base::makeError(base::ErrorCode::kUnavailable, "first try fails");
    if (auto obj = cms->get(key)) {
      events.record(*obj, "Normal", "Reconciled", "seen by the test controller");
      if (key == "default/steady") {
        std::lock_guard g(mu);
        ++steadyEvents;
        const json::value* d = obj->if_contains("data");
        const json::value* v = d && d->is_object() ? d->get_object().if_contains("v") : nullptr;
        steadySaw = v && v->is_string() ? std::string(v->get_string()) : "";
      }
    }
    return {};
  });
  ctl.watch(*cms);
  informers.start();
  ASSERT_TRUE(informers.waitForSync(30s));
  std::jthread runner([&](std::stop_token st) { ctl.run(st); });
  ASSERT_TRUE(c->create(resources::kConfigMaps, "default", configMap("steady", "1")));
  ASSERT_TRUE(c->create(resources::kConfigMaps, "default", configMap("flaky", "1")));
  ASSERT_TRUE(testing::waitFor([&] {
    std::lock_guard g(mu);
    return reconciles["default/flaky"] >= 2 && reconciles["default/steady"] >= 1;
  }, 30s));
  // Three more changes to "steady", each waited for until a reconcile has seen
  // it: the same event again, aggregated into one Event with a count.
  for (int i = 2; i <= 4; ++i) {
    ASSERT_TRUE(c->patch(resources::kConfigMaps, "default", "steady", PatchType::kMerge,
                         R"({"data":{"v":")" + std::to_string(i) + "\"}}"));
    ASSERT_TRUE(testing::waitFor([&] {
      std::lock_guard g(mu);
      return steadySaw == std::to_string(i);
    }, 20s));
  }
  runner.request_stop();
  runner.join();
  events.flush();
  int recorded;
  {
    std::lock_guard g(mu);
    recorded = steadyEvents;  // at least 4; more if a change was reconciled twice
  }
  ASSERT_GE(recorded, 4);
  auto list = c->list(resources::kEvents, "default", {.fieldSelector = "involvedObject.name=steady"});
  ASSERT_TRUE(list);
  ASSERT_EQ(list->items.size(), 1u) << "repeats were not aggregated";
  const json::object& ev = list->items[0];
  EXPECT_EQ(ev.at("reason").as_string(), "Reconciled");
  EXPECT_EQ(ev.at("count").as_int64(), recorded);
  EXPECT_EQ(ev.at("involvedObject").at("kind").as_string(), "ConfigMap");
  std::string text = metrics.render();
  EXPECT_NE(text.find("trellis_controller_reconcile_errors_total{controller=\"test\"} 1"), std::string::npos) << text;
  // kubectl describe shows the event (filtered by the object's uid).
  auto d = testing::run("kubectl --kubeconfig " + server_.kubeconfig() + " describe cm steady");
  EXPECT_NE(d.out.find("Reconciled"), std::string::npos) << d.out;
  EXPECT_NE(d.out.find("(x" + std::to_string(recorded) + " over"), std::string::npos) << d.out;
}

TEST_F(KubeTest, RetriesHonourRetryAfterAndTheRateLimiterPaces) {
  // A plain HTTP server that answers 429 (Retry-After: 1), then 503, then the object.
  std::atomic<int> calls{0};
  http::ServerOptions so;
  so.port = 0;
  http::Server server(so, [&](http::Request&, std::shared_ptr<http::ResponseWriter> w) {
    int n = ++calls;
    http::Response r;
    r.headers.add("content-type", "application/json");
    if (n == 1) {
      r.status = 429;
      r.headers.add("retry-after", "1");
      r.body = R"({"kind":"Status","status":"Failure","reason":"TooManyRequests","code":429})";
    } else if (n == 2) {
      r.status = 503;
      r.body = R"({"kind":"Status","status":"Failure","reason":"ServiceUnavailable","code":503})";
    } else {
      r.body = R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"default"}})";
    }
    w->respond(std::move(r));
  });
  ASSERT_TRUE(server.start());
  RestConfig cfg;
  cfg.server = "http://127.0.0.1:" + std::to_string(server.port());
  auto c = Client::create(cfg, {.qps = 0, .initialBackoff = 10ms});
  ASSERT_TRUE(c);
  auto start = std::chrono::steady_clock::now();
  auto got = (*c)->get(resources::kConfigMaps, "default", "a");
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(got) << got.error().message();
  EXPECT_EQ(calls.load(), 3);
  EXPECT_GE(took, 500ms);  // Retry-After: 1 (with jitter 0.5x-1.5x)
  // No retries left: the last Status is the error.
  calls = 0;
  auto none = Client::create(cfg, {.qps = 0, .maxRetries = 0});
  auto failed = (*none)->get(resources::kConfigMaps, "default", "a");
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code(), base::ErrorCode::kResourceExhausted);
  // qps 20, burst 1: 11 requests take about half a second.
  calls = 2;  // answer with the object from now on
  auto paced = Client::create(cfg, {.qps = 20, .burst = 1});
  start = std::chrono::steady_clock::now();
  for (int i = 0; i < 11; ++i) ASSERT_TRUE((*paced)->get(resources::kConfigMaps, "default", "a"));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 450ms);
  server.stop(0ms);
}

TEST_F(KubeTest, LabelIndexAndResync) {
  startServer();
  auto c = newClient({.qps = 0});
  for (int i = 0; i < 6; ++i) {
    json::object cm = configMap("l" + std::to_string(i), "x");
    cm["metadata"].as_object()["labels"] = json::object{{"app", i % 2 ? "web" : "db"}};
    ASSERT_TRUE(c->create(resources::kConfigMaps, "default", cm));
  }
  std::atomic<int> resyncs{0};
  Informer inf(*c, resources::kConfigMaps, {.ns = "default", .resync = 1000ms});
  inf.addIndex("app", labelIndex("app"));
  inf.addHandler({.onUpdate = [&](const ObjectPtr& a, const ObjectPtr& b) { resyncs += a == b; }});
  inf.start();
  ASSERT_TRUE(inf.waitForSync(30s));
  EXPECT_EQ(inf.byIndex("app", "web").size(), 3u);
  EXPECT_EQ(inf.byIndex("app", "db").size(), 3u);
  ASSERT_TRUE(c->patch(resources::kConfigMaps, "default", "l0", PatchType::kMerge, R"({"metadata":{"labels":{"app":"web"}}})"));
  ASSERT_TRUE(testing::waitFor([&] { return inf.byIndex("app", "web").size() == 4; }, 30s));
  EXPECT_EQ(inf.byIndex("app", "db").size(), 2u);
  // Resync: every object handed to onUpdate as unchanged, once per period.
  ASSERT_TRUE(testing::waitFor([&] { return resyncs.load() >= 6; }, 30s));
}

TEST_F(KubeTest, InformerOverHttp1ChunkedWatch) {
  // Cleartext to apiserver-lite's insecure port: HTTP/1.1, watches as chunked responses.
  int insecure = testing::freeTcpPort();
  startServer({"--insecure-port", std::to_string(insecure)});
  RestConfig cfg;
  cfg.server = "http://127.0.0.1:" + std::to_string(insecure);
  auto c = Client::create(cfg, {.qps = 0});
  ASSERT_TRUE(c);
  Informer inf(**c, resources::kConfigMaps, {.ns = "default"});
  HandlerView view;
  inf.addHandler(view.handler());
  inf.start();
  ASSERT_TRUE(inf.waitForSync(30s));
  for (int i = 0; i < 20; ++i) ASSERT_TRUE((*c)->create(resources::kConfigMaps, "default", configMap("h" + std::to_string(i), "1")));
  ASSERT_TRUE((*c)->remove(resources::kConfigMaps, "default", "h0"));
  auto want = freshList(**c);
  ASSERT_EQ(want.size(), 19u);
  ASSERT_TRUE(testing::waitFor([&] { return view.snapshot() == want; }, 30s));
  EXPECT_EQ(inf.stats().lists, 1u);
}

}  // namespace
}  // namespace trellis::kube
