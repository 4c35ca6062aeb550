#include "common/base/metrics.h"

#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

namespace trellis::base {
namespace {

void atomicAdd(std::atomic<double>& a, double d) {
  double cur = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(cur, cur + d, std::memory_order_relaxed)) {
  }
}

std::string escapeLabelValue(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string renderLabels(const Labels& labels) {
  if (labels.empty()) return {};
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i) out += ',';
    out += labels[i].first + "=\"" + escapeLabelValue(labels[i].second) + "\"";
  }
  return out + "}";
}

// Adds one more label to an already rendered label set.
std::string withLabel(const std::string& rendered, const std::string& kv) {
  if (rendered.empty()) return "{" + kv + "}";
  return rendered.substr(0, rendered.size() - 1) + "," + kv + "}";
}

std::string formatNumber(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{}", static_cast<int64_t>(v));
  return fmt::format("{}", v);
}

}  // namespace

void Gauge::add(double d) { atomicAdd(v_, d); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  atomicAdd(sum_, v);
}

uint64_t Histogram::cumulative(size_t i) const {
  uint64_t total = 0;
  for (size_t j = 0; j <= i && j <= bounds_.size(); ++j) total += buckets_[j].load(std::memory_order_relaxed);
  return total;
}

std::vector<double> latencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

Registry::Series& Registry::series(const std::string& name, const std::string& help, Type type,
                                   const Labels& labels) {
  Family& fam = families_[name];
  if (fam.series.empty()) {
    fam.type = type;
    fam.help = help;
  } else if (fam.type != type) {
    throw std::logic_error("metric " + name + " registered with two types");
  }
  return fam.series[renderLabels(labels)];
}

Counter& Registry::counter(const std::string& name, const std::string& help, const Labels& labels) {
  std::lock_guard lock(mu_);
  Series& s = series(name, help, Type::kCounter, labels);
  if (!s.counter) s.counter = std::make_unique<Counter>();
  return *s.counter;
}

Gauge& Registry::gauge(const std::string& name, const std::string& help, const Labels& labels) {
  std::lock_guard lock(mu_);
  Series& s = series(name, help, Type::kGauge, labels);
  if (!s.gauge) s.gauge = std::make_unique<Gauge>();
  return *s.gauge;
}

Histogram& Registry::histogram(const std::string& name, const std::string& help, std::vector<double> bounds,
                               const Labels& labels) {
  std::lock_guard lock(mu_);
  Series& s = series(name, help, Type::kHistogram, labels);
  if (!s.histogram) s.histogram = std::make_unique<Histogram>(std::move(bounds));
  return *s.histogram;
}

std::string Registry::render() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [name, fam] : families_) {
    const char* type = fam.type == Type::kCounter ? "counter" : fam.type == Type::kGauge ? "gauge" : "histogram";
    fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, fam.help, name, type);
    for (const auto& [labels, s] : fam.series) {
      if (s.counter) {
        fmt::format_to(std::back_inserter(out), "{}{} {}\n", name, labels, s.counter->value());
      } else if (s.gauge) {
        fmt::format_to(std::back_inserter(out), "{}{} {}\n", name, labels, formatNumber(s.gauge->value()));
      } else if (s.histogram) {
        const Histogram& h = *s.histogram;
        for (size_t i = 0; i <= h.bounds().size(); ++i) {
          std::string le = i < h.bounds().size() ? formatNumber(h.bounds()[i]) : "+Inf";
          fmt::format_to(std::back_inserter(out), "{}_bucket{} {}\n", name, withLabel(labels, "le=\"" + le + "\""),
                         h.cumulative(i));
        }
        fmt::format_to(std::back_inserter(out), "{}_sum{} {}\n{}_count{} {}\n", name, labels,
                       formatNumber(h.sum()), name, labels, h.count());
      }
    }
  }
  return out;
}

}  // namespace trellis::base
