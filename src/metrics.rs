//! Prometheus metrics: requests by rpc and status, latency histograms, images hashed,
//! index size by label, work queue depth and requests refused for load.

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    rpc: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabel {
    rpc: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LabelLabel {
    label: String,
}

/// The service's metrics. Counters are updated as requests finish (the refusal counter is
/// the work pool's own); gauges are read from the engine when scraped.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RpcLabel, Histogram>,
    images_hashed: Counter,
    entries: Family<LabelLabel, Gauge>,
    in_flight: Gauge,
    queued: Gauge,
}

impl Metrics {
    /// `rejected`: the work pool's count of requests refused for load.
    pub fn new(rejected: Counter) -> Self {
        let mut registry = Registry::with_prefix("lookalike");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Requests answered, by rpc (or HTTP endpoint) and status code", requests.clone());
        // 0.5 ms to ~16 s.
        let latency = Family::<RpcLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register("request_duration_seconds", "Time from request to answer, by rpc", latency.clone());
        let images_hashed = Counter::default();
        registry.register("images_hashed", "Images decoded and hashed", images_hashed.clone());
        let entries = Family::<LabelLabel, Gauge>::default();
        registry.register("index_entries", "Live entries in the index, by label", entries.clone());
        let in_flight = Gauge::default();
        registry.register("work_in_flight", "Image jobs running now", in_flight.clone());
        let queued = Gauge::default();
        registry.register("work_queued", "Image jobs waiting for a worker now", queued.clone());
        registry.register(
            "rejected_for_load",
            "Requests refused with RESOURCE_EXHAUSTED because the queue was full",
            rejected,
        );
        Metrics { registry, requests, latency, images_hashed, entries, in_flight, queued }
    }

    /// One finished request: its rpc (or endpoint), status code name and duration.
    pub fn request(&self, rpc: &str, code: &str, seconds: f64) {
        self.requests.get_or_create(&RequestLabels { rpc: rpc.into(), code: code.into() }).inc();
        self.latency.get_or_create(&RpcLabel { rpc: rpc.into() }).observe(seconds);
    }

    pub fn image_hashed(&self) {
        self.images_hashed.inc();
    }

    /// Render in the Prometheus text format, after setting the gauges from current values.
    pub fn render(&self, entries_by_label: &[(&str, u64)], in_flight: usize, queued: usize) -> String {
        for (label, n) in entries_by_label {
            self.entries.get_or_create(&LabelLabel { label: (*label).into() }).set(*n as i64);
        }
        self.in_flight.set(in_flight as i64);
        self.queued.set(queued as i64);
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
