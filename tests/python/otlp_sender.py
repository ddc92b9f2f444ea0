"""Exports one collection of metrics to Strata with the OpenTelemetry Python
SDK over OTLP/HTTP (protobuf), then prints what it sent as JSON for the Rust
test to compare with Strata's export.

    otlp_sender.py <base-url> <path>
"""

import json
import sys

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

base_url, path = sys.argv[1], sys.argv[2]

results = []


class RecordingExporter(OTLPMetricExporter):
    """Remembers every export's result: a failed export must fail the test."""

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        result = super().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        results.append(result)
        return result


resource = Resource.create(
    {
        "service.name": "e2e-otlp",
        "service.namespace": "strata",
        "service.instance.id": "i-1",
        "deployment.environment": "test",
    }
)
exporter = RecordingExporter(endpoint=base_url + path)
# A period far beyond the test: the only export is the one at shutdown.
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
provider = MeterProvider(resource=resource, metric_readers=[reader])
meter = provider.get_meter("e2e.sender", "0.1")

gauge = meter.create_gauge("e2e.temperature", unit="Cel")
gauge.set(0.1 + 0.2, {"room": "lab"})

counter = meter.create_counter("e2e.requests", unit="{request}")
counter.add(3, {"code": "200"})
counter.add(4, {"code": "200"})
counter.add(1, {"code": "500"})

updown = meter.create_up_down_counter("e2e.queue.items")
updown.add(5)
updown.add(-2)

histogram = meter.create_histogram(
    "e2e.latency", unit="ms", explicit_bucket_boundaries_advisory=[1.0, 5.0, 10.0]
)
for value in [0.5, 3.0, 3.0, 7.0, 20.0]:
    histogram.record(value, {"route": "/api"})

# Shutdown collects and exports once (a flush before it would export twice).
provider.shutdown()

if len(results) != 1 or results[0] != MetricExportResult.SUCCESS:
    print(f"want one successful export, got {results}", file=sys.stderr)
    sys.exit(1)

json.dump({"resource": {k: str(v) for k, v in resource.attributes.items()}}, sys.stdout)
