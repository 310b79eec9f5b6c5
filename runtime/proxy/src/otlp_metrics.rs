//! The metrics, pushed to a collector over OTLP: every instrument of `/metrics`, with the same
//! values, labels and buckets (`/metrics` stays).
//!
//! One source: the families `/metrics` renders ([`crate::admin::families`]) are translated as
//! they are, so the two can never disagree, and an instrument added to one is in both. A thread
//! of its own reads them once per interval and pushes them (HTTP/protobuf with a blocking client,
//! or gRPC through a one-thread runtime); nothing on a request's path waits for it. Every push
//! carries every value (cumulative temporality), so a failed push loses no count, only the points
//! between two pushes; failures are counted (`sluicegate_telemetry_metric_pushes_failed_total`)
//! and logged at most once a minute.
//!
//! The translation is the one the OpenTelemetry compatibility rules give for Prometheus metrics:
//! a counter is a monotonic sum named without `_total`, a gauge a gauge, a histogram a histogram
//! with its bounds (the `+Inf` bucket is the last count), labels are attributes, a `_seconds` or
//! `_bytes` name has unit `s` or `By`. A backend that writes OTLP back to Prometheus names them as
//! `/metrics` does.

use crate::telemetry::{self, Export, MetricsExport};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    self as otlp, AggregationTemporality, HistogramDataPoint, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the families come from: read once per push, on the pushing thread.
pub type Source = Box<dyn Fn() -> Vec<MetricFamily> + Send>;

/// A metrics push that could not start.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The HTTP client refused its settings (or its TLS cannot be set up).
    #[error("cannot build the OTLP metrics client: {0}")]
    Http(String),
    /// The gRPC endpoint is not a URI, or its runtime could not start.
    #[error("cannot start the OTLP metrics gRPC client: {0}")]
    Grpc(String),
    /// The pushing thread could not start.
    #[error("cannot start the metrics push thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// The pushing thread; [`MetricsPush::shutdown`] pushes once more and stops it.
pub struct MetricsPush {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl MetricsPush {
    /// Starts pushing `source`'s families as `export.metrics` says; `None` if it says not to.
    pub fn start(export: &Export, source: Source) -> Result<Option<MetricsPush>, PushError> {
        let Some(metrics) = export.metrics.clone() else { return Ok(None) };
        let resource = Resource {
            attributes: ResourceAttributesWithSchema::from(&telemetry::resource(export)).attributes.0,
            ..Resource::default()
        };
        let (stop, stopped) = mpsc::channel();
        let (ready, started) = mpsc::sync_channel(1);
        let (export, interval) = (export.clone(), metrics.interval);
        // The clients are made on the thread that uses them (neither may be made or dropped
        // inside the caller's async runtime); it says whether they could be.
        let thread = std::thread::Builder::new().name("otlp-metrics".into()).spawn(move || {
            let transport = match Transport::new(&export, &metrics) {
                Ok(transport) => transport,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let _ = ready.send(Ok(()));
            let mut pusher = Pusher { transport, resource, source, starts: Starts::new(), warned: Mutex::new(None) };
            // A stop (or the sender gone) ends the wait early: one last push, then out.
            while stopped.recv_timeout(interval) == Err(mpsc::RecvTimeoutError::Timeout) {
                pusher.push();
            }
            pusher.push();
        })?;
        match started.recv() {
            Ok(Ok(())) => Ok(Some(MetricsPush { stop, thread })),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(PushError::Grpc("the metrics push thread ended at its start".into())),
        }
    }

    /// Pushes the values as they are now (waiting up to the export timeout) and stops.
    pub fn shutdown(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::warn!("telemetry: the metrics push thread panicked");
        }
    }
}

/// How pushes travel. (One per process: the size of the gRPC variant costs nothing.)
#[allow(clippy::large_enum_variant)]
enum Transport {
    /// The exports' client, which sends the configured headers itself.
    Http { client: reqwest::blocking::Client, url: String },
    Grpc {
        runtime: tokio::runtime::Runtime,
        client: MetricsServiceClient<tonic::transport::Channel>,
        metadata: tonic::metadata::MetadataMap,
    },
}

impl Transport {
    fn new(export: &Export, metrics: &MetricsExport) -> Result<Transport, PushError> {
        Ok(match export.protocol {
            sluicegate_contract::config::OtlpProtocol::HttpProtobuf => Transport::Http {
                client: telemetry::http_client(export).map_err(|e| PushError::Http(e.to_string()))?,
                url: metrics.url.clone(),
            },
            sluicegate_contract::config::OtlpProtocol::Grpc => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| PushError::Grpc(e.to_string()))?;
                let endpoint = tonic::transport::Endpoint::from_shared(metrics.url.clone())
                    .map_err(|e| PushError::Grpc(e.to_string()))?
                    .timeout(export.timeout)
                    .connect_timeout(export.timeout);
                let channel = runtime.block_on(async { endpoint.connect_lazy() });
                let metadata = tonic::metadata::MetadataMap::from_headers(export.headers.map());
                Transport::Grpc { runtime, client: MetricsServiceClient::new(channel), metadata }
            }
        })
    }

    fn send(&mut self, request: ExportMetricsServiceRequest) -> Result<(), String> {
        match self {
            Transport::Http { client, url } => {
                let body = prost::Message::encode_to_vec(&request);
                let response = client
                    .post(url.as_str())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(body)
                    .send()
                    .map_err(|e| with_causes(&e))?;
                match response.status() {
                    status if status.is_success() => Ok(()),
                    status => Err(format!("the collector answered {status}")),
                }
            }
            Transport::Grpc { runtime, client, metadata } => {
                let mut request = tonic::Request::new(request);
                *request.metadata_mut() = metadata.clone();
                runtime.block_on(client.export(request)).map(drop).map_err(|status| status.to_string())
            }
        }
    }
}

struct Pusher {
    transport: Transport,
    resource: Resource,
    source: Source,
    starts: Starts,
    warned: Mutex<Option<Instant>>,
}

impl Pusher {
    fn push(&mut self) {
        let now = SystemTime::now();
        let metrics = translate(&(self.source)(), &mut self.starts, now);
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "sluicegate".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..InstrumentationScope::default()
                    }),
                    metrics,
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        };
        let result = self.transport.send(request);
        if let Some(failed) = telemetry::count_metric_push(result.is_ok())
            && telemetry::due(&self.warned)
        {
            let why = result.err().unwrap_or_default();
            tracing::warn!(failed, "telemetry: a push of the metrics to the collector failed: {why}");
        }
    }
}

/// An error and what caused it, as one line (reqwest's own message leaves the cause out).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        line.push_str(": ");
        line.push_str(&inner.to_string());
        cause = inner.source();
    }
    line
}

/// When each cumulative series started: the first push for those there from the start, the push
/// before for one that appears later or whose value went down (a reload replaced its counters,
/// which start again from zero), so a backend sees a reset where there was one.
struct Starts {
    first: u64,
    last_push: Option<u64>,
    /// Each series' start and value at the last push, and at this one.
    series: HashMap<String, (u64, f64)>,
    seen: HashMap<String, (u64, f64)>,
}

impl Starts {
    fn new() -> Starts {
        let first = unix_nanos(SystemTime::now());
        Starts { first, last_push: None, series: HashMap::new(), seen: HashMap::new() }
    }

    /// The start of series `key` whose cumulative value (a count) is `value` now.
    fn of(&mut self, key: String, value: f64) -> u64 {
        let start = match self.series.get(&key) {
            Some(&(start, before)) if value >= before => start,
            _ => self.last_push.unwrap_or(self.first),
        };
        self.seen.insert(key, (start, value));
        start
    }

    /// The push at `now` is made: series it did not see (a route or link a reload removed)
    /// are forgotten.
    fn pushed(&mut self, now: u64) {
        self.series = std::mem::take(&mut self.seen);
        self.last_push = Some(now);
    }
}

/// `families` as OTLP metrics at `now`.
fn translate(families: &[MetricFamily], starts: &mut Starts, now: SystemTime) -> Vec<otlp::Metric> {
    let now = unix_nanos(now);
    let metrics = families.iter().filter_map(|family| metric(family, starts, now)).collect();
    starts.pushed(now);
    metrics
}

fn metric(family: &MetricFamily, starts: &mut Starts, now: u64) -> Option<otlp::Metric> {
    let name = family.name();
    let cumulative = AggregationTemporality::Cumulative as i32;
    let (name, data) = match family.get_field_type() {
        MetricType::COUNTER => {
            let points = family.get_metric().iter().map(|m| {
                let start = starts.of(key(name, m), m.get_counter().get_value());
                number(m, m.get_counter().get_value(), start, now)
            });
            let sum =
                otlp::Sum { data_points: points.collect(), aggregation_temporality: cumulative, is_monotonic: true };
            (name.strip_suffix("_total").unwrap_or(name), metric::Data::Sum(sum))
        }
        MetricType::GAUGE => {
            let points = family.get_metric().iter().map(|m| number(m, m.get_gauge().get_value(), 0, now));
            (name, metric::Data::Gauge(otlp::Gauge { data_points: points.collect() }))
        }
        MetricType::HISTOGRAM => {
            let points = family.get_metric().iter().map(|m| {
                let start = starts.of(key(name, m), m.get_histogram().get_sample_count() as f64);
                histogram(m, start, now)
            });
            let data_points = points.collect();
            (name, metric::Data::Histogram(otlp::Histogram { data_points, aggregation_temporality: cumulative }))
        }
        // The proxy has no summaries or untyped metrics.
        _ => return None,
    };
    Some(otlp::Metric {
        name: name.to_string(),
        description: family.help().to_string(),
        unit: unit(name).to_string(),
        data: Some(data),
        ..otlp::Metric::default()
    })
}

fn number(m: &Metric, value: f64, start: u64, now: u64) -> NumberDataPoint {
    // The proxy's counts are whole numbers: integers where they fit.
    let value = if value.fract() == 0.0 && value.abs() < 9.0e15 {
        number_data_point::Value::AsInt(value as i64)
    } else {
        number_data_point::Value::AsDouble(value)
    };
    NumberDataPoint {
        attributes: attributes(m.get_label()),
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(value),
        ..NumberDataPoint::default()
    }
}

/// Prometheus buckets are cumulative counts up to each bound; OTLP's count each bucket alone,
/// with one more, above the last bound.
fn histogram(m: &Metric, start: u64, now: u64) -> HistogramDataPoint {
    let h = m.get_histogram();
    let mut explicit_bounds = Vec::with_capacity(h.get_bucket().len());
    let mut bucket_counts = Vec::with_capacity(h.get_bucket().len() + 1);
    let mut below = 0;
    for bucket in h.get_bucket().iter().filter(|b| b.upper_bound().is_finite()) {
        explicit_bounds.push(bucket.upper_bound());
        bucket_counts.push(bucket.cumulative_count().saturating_sub(below));
        below = bucket.cumulative_count();
    }
    bucket_counts.push(h.get_sample_count().saturating_sub(below));
    HistogramDataPoint {
        attributes: attributes(m.get_label()),
        start_time_unix_nano: start,
        time_unix_nano: now,
        count: h.get_sample_count(),
        sum: Some(h.get_sample_sum()),
        bucket_counts,
        explicit_bounds,
        ..HistogramDataPoint::default()
    }
}

fn attributes(labels: &[LabelPair]) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|pair| KeyValue {
            key: pair.name().to_string(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(pair.value().to_string())) }),
            ..KeyValue::default()
        })
        .collect()
}

/// A series' identity: its family and labels.
fn key(name: &str, m: &Metric) -> String {
    let mut key = name.to_string();
    for pair in m.get_label() {
        key.extend([",", pair.name(), "=", pair.value()]);
    }
    key
}

/// The UCUM unit a name's suffix spells.
fn unit(name: &str) -> &'static str {
    if name.ends_with("_seconds") {
        "s"
    } else if name.ends_with("_bytes") {
        "By"
    } else {
        ""
    }
}

fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::core::Collector as _;

    fn family(kind: MetricType, name: &str, metrics: Vec<Metric>) -> MetricFamily {
        let mut family = MetricFamily::default();
        family.set_name(name.into());
        family.set_help("help".into());
        family.set_field_type(kind);
        family.set_metric(metrics);
        family
    }

    fn counter(route: &str, value: f64) -> Metric {
        let mut label = LabelPair::default();
        label.set_name("route".into());
        label.set_value(route.into());
        let mut counter = prometheus::proto::Counter::default();
        counter.set_value(value);
        let mut metric = Metric::from_label(vec![label]);
        metric.set_counter(counter);
        metric
    }

    fn sum_points(metric: &otlp::Metric) -> Vec<(u64, i64)> {
        let Some(metric::Data::Sum(sum)) = &metric.data else { panic!("a sum: {metric:?}") };
        assert!(sum.is_monotonic && sum.aggregation_temporality == AggregationTemporality::Cumulative as i32);
        sum.data_points
            .iter()
            .map(|p| match p.value {
                Some(number_data_point::Value::AsInt(v)) => (p.start_time_unix_nano, v),
                _ => panic!("an integer: {p:?}"),
            })
            .collect()
    }

    #[test]
    fn counters_are_monotonic_sums_without_total_and_a_reset_moves_the_start() {
        let mut starts = Starts::new();
        let t1 = SystemTime::now() + Duration::from_secs(1);
        let pushed = translate(
            &[family(MetricType::COUNTER, "sluicegate_route_streams_total", vec![counter("/a", 3.0)])],
            &mut starts,
            t1,
        );
        assert_eq!((pushed[0].name.as_str(), pushed[0].unit.as_str()), ("sluicegate_route_streams", ""));
        assert_eq!(sum_points(&pushed[0]), [(starts.first, 3)]);
        let attribute = &sum_points_attributes(&pushed[0])[0];
        assert_eq!(attribute, &("route".to_string(), "/a".to_string()));

        // A reload restarted `/a` from zero; `/b` is new: both start at the push before.
        let t2 = t1 + Duration::from_secs(60);
        let families = [family(
            MetricType::COUNTER,
            "sluicegate_route_streams_total",
            vec![counter("/a", 1.0), counter("/b", 5.0)],
        )];
        let pushed = translate(&families, &mut starts, t2);
        assert_eq!(sum_points(&pushed[0]), [(unix_nanos(t1), 1), (unix_nanos(t1), 5)]);
        // No reset since: the starts stay.
        let pushed = translate(&families, &mut starts, t2 + Duration::from_secs(60));
        assert_eq!(sum_points(&pushed[0]), [(unix_nanos(t1), 1), (unix_nanos(t1), 5)]);
    }

    fn sum_points_attributes(metric: &otlp::Metric) -> Vec<(String, String)> {
        let Some(metric::Data::Sum(sum)) = &metric.data else { panic!("a sum") };
        sum.data_points[0]
            .attributes
            .iter()
            .map(|kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => (kv.key.clone(), s.clone()),
                other => panic!("a string attribute: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn histograms_count_each_bucket_alone_with_one_above_the_last_bound() {
        let histogram = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new("sluicegate_route_chain_delay_seconds", "help").buckets(vec![0.1, 1.0]),
        )
        .unwrap();
        for seconds in [0.05, 0.5, 0.7, 5.0] {
            histogram.observe(seconds);
        }
        let mut families = histogram.collect();
        families[0].mut_metric()[0].set_label(vec![]);
        let pushed = translate(&families, &mut Starts::new(), SystemTime::now());
        assert_eq!(pushed[0].unit, "s");
        let Some(metric::Data::Histogram(h)) = &pushed[0].data else { panic!("a histogram") };
        let point = &h.data_points[0];
        assert_eq!(point.explicit_bounds, [0.1, 1.0]);
        assert_eq!(point.bucket_counts, [1, 2, 1]);
        assert_eq!(point.count, 4);
        assert!((point.sum.unwrap() - 6.25).abs() < 1e-9);
    }

    #[test]
    fn gauges_stay_gauges_with_their_name() {
        let mut gauge = prometheus::proto::Gauge::default();
        gauge.set_value(7.0);
        let mut metric = Metric::default();
        metric.set_gauge(gauge);
        let pushed = translate(
            &[family(MetricType::GAUGE, "process_resident_memory_bytes", vec![metric])],
            &mut Starts::new(),
            SystemTime::now(),
        );
        assert_eq!((pushed[0].name.as_str(), pushed[0].unit.as_str()), ("process_resident_memory_bytes", "By"));
        let Some(metric::Data::Gauge(g)) = &pushed[0].data else { panic!("a gauge") };
        assert_eq!(g.data_points[0].value, Some(number_data_point::Value::AsInt(7)));
    }
}
