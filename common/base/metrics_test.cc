#include "common/base/metrics.h"

#include <gtest/gtest.h>

namespace trellis::base {
namespace {

TEST(Metrics, RendersPrometheusText) {
  Registry r;
  r.counter("trellis_test_requests_total", "Requests", {{"code", "200"}}).inc(3);
  r.counter("trellis_test_requests_total", "Requests", {{"code", "404"}}).inc();
  r.gauge("trellis_test_open", "Open things").set(2.5);
  Histogram& h = r.histogram("trellis_test_latency_seconds", "Latency", {0.1, 1});
  h.observe(0.05);
  h.observe(0.5);
  h.observe(5);
  std::string text = r.render();
  EXPECT_NE(text.find("# HELP trellis_test_requests_total Requests\n# TYPE trellis_test_requests_total counter\n"),
            std::string::npos);
  EXPECT_NE(text.find("trellis_test_requests_total{code=\"200\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("trellis_test_requests_total{code=\"404\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("trellis_test_open 2.5\n"), std::string::npos);
  EXPECT_NE(text.find("trellis_test_latency_seconds_bucket{le=\"0.1\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("trellis_test_latency_seconds_bucket{le=\"1\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("trellis_test_latency_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("trellis_test_latency_seconds_sum 5.55\n"), std::string::npos);
  EXPECT_NE(text.find("trellis_test_latency_seconds_count 3\n"), std::string::npos);
}

TEST(Metrics, SameNameAndLabelsIsSameSeries) {
  Registry r;
  Counter& a = r.counter("c_total", "c");
  Counter& b = r.counter("c_total", "c");
  EXPECT_EQ(&a, &b);
  EXPECT_THROW(r.gauge("c_total", "c"), std::logic_error);
}

TEST(Metrics, LabelValuesAreEscaped) {
  Registry r;
  r.counter("e_total", "e", {{"path", "a\"b\\c\n"}}).inc();
  EXPECT_NE(r.render().find("e_total{path=\"a\\\"b\\\\c\\n\"} 1"), std::string::npos);
}

}  // namespace
}  // namespace trellis::base
