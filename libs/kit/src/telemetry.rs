//! Tracing for every service: human-readable logs on stderr, filtered by
//! `RUST_LOG` (default `info`), plus OpenTelemetry spans exported over OTLP/gRPC
//! when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` variable is set.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// Keeps the OTLP pipeline alive; flushes pending spans when dropped.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("telemetry: flushing spans failed: {error}");
        }
    }
}

/// Installs the global subscriber for `service`. Must run inside the Tokio
/// runtime (the OTLP exporter is a tonic client). Calling it again in the same
/// process (several services in one `strata up`, or tests) is harmless.
pub fn init(service: &str) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false);

    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => match otlp_provider(service) {
            Ok(provider) => Some(provider),
            Err(error) => {
                eprintln!("telemetry: OTLP exporter to {endpoint} not started: {error}");
                None
            }
        },
        _ => None,
    };
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service.to_owned())));

    let installed = tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init().is_ok();
    TelemetryGuard { provider: if installed { provider } else { None } }
}

fn otlp_provider(service: &str) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    // The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT (and _TIMEOUT, _HEADERS) itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service.to_owned()).build())
        .build())
}
