"""Prometheus metrics of one edge device on its own HTTP port (``metrics_port`` in the edge config).

A collector reads each camera's stats, publisher and store-and-forward queue when Prometheus scrapes;
nothing is counted twice. The port is off by default; it shows counts and health only (no images, no
credentials). Bind it to 127.0.0.1 or the management network (``metrics_bind``) where the venue LAN is open.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from edge.pipeline import CameraWorker

log = logging.getLogger(__name__)


class EdgeCollector(Collector):
    """Per-camera figures of the running workers, read at scrape time."""

    def __init__(self, workers: Sequence[CameraWorker]) -> None:
        self.workers = workers

    def collect(self) -> Iterator[Any]:
        labels = ["camera"]
        fam = {
            "fps": GaugeMetricFamily("turnout_edge_analysis_fps", "Frames analysed per second (last 30).", labels=labels),
            "target": GaugeMetricFamily("turnout_edge_analysis_fps_target", "Configured analysis_fps.", labels=labels),
            "latency": GaugeMetricFamily(
                "turnout_edge_latency_seconds", "Capture to counted, last analysed frame.", labels=labels
            ),
            "frames": CounterMetricFamily("turnout_edge_frames_analysed", "Frames analysed.", labels=labels),
            "failures": CounterMetricFamily("turnout_edge_analysis_failures", "Frames whose analysis failed.", labels=labels),
            "tiles": CounterMetricFamily(
                "turnout_edge_tiles", "Detector tiles run, skipped (no section near) or reused (unchanged pixels).", labels=["camera", "outcome"]
            ),
            "restarts": CounterMetricFamily(
                "turnout_edge_stage_restarts", "Capture/detect stage restarts.", labels=["camera", "stage"]
            ),
            "published": CounterMetricFamily("turnout_edge_published", "Occupancy messages queued to send.", labels=labels),
            "sent": CounterMetricFamily("turnout_edge_sent", "Occupancy messages acknowledged by the broker.", labels=labels),
            "spool": GaugeMetricFamily("turnout_edge_spool_messages", "Messages waiting in the on-disk queue.", labels=labels),
            "age": GaugeMetricFamily(
                "turnout_edge_spool_oldest_age_seconds", "Wait of the oldest queued message.", labels=labels
            ),
            "dropped": CounterMetricFamily(
                "turnout_edge_dropped", "Counts lost: queue bound, broker refusals, unstorable.", labels=labels
            ),
            "connected": GaugeMetricFamily("turnout_edge_mqtt_connected", "1 while connected to the broker.", labels=labels),
            "reconnects": CounterMetricFamily(
                "turnout_edge_mqtt_reconnects", "Connections to the broker after the first.", labels=labels
            ),
            "online": GaugeMetricFamily("turnout_edge_camera_online", "1 while the camera's status is online.", labels=labels),
        }
        for w in self.workers:
            cam, s, pub = w.camera.id, w.stats, w.publisher
            ps = pub.stats
            fam["fps"].add_metric([cam], s.fps)
            fam["target"].add_metric([cam], w.camera.analysis_fps)
            fam["latency"].add_metric([cam], s.latency_ms / 1000.0)
            fam["frames"].add_metric([cam], s.frames)
            fam["failures"].add_metric([cam], s.failures)
            fam["tiles"].add_metric([cam, "run"], s.tiles_run)
            fam["tiles"].add_metric([cam, "skipped"], s.tiles_skipped)
            fam["tiles"].add_metric([cam, "reused"], s.tiles_reused)
            for stage, n in s.restarts.items():
                fam["restarts"].add_metric([cam, stage], n)
            fam["published"].add_metric([cam], s.published)
            fam["sent"].add_metric([cam], ps.sent)
            fam["spool"].add_metric([cam], ps.queued)
            fam["age"].add_metric([cam], _safe(pub.spool.oldest_age_s))
            fam["dropped"].add_metric([cam], ps.dropped + s.unstored)
            fam["connected"].add_metric([cam], 1.0 if pub.connected else 0.0)
            fam["reconnects"].add_metric([cam], max(0, pub.connects - 1))
            fam["online"].add_metric([cam], 1.0 if s.state.value == "online" else 0.0)
        yield from fam.values()


def _safe(read: Any) -> float:
    try:
        return float(read())
    except Exception:  # a closed or failing queue file must not break the scrape
        return float("nan")


def serve(workers: Sequence[CameraWorker], port: int, bind: str = "0.0.0.0") -> Any:
    """Start the metrics HTTP server in a daemon thread; returns the server (``.shutdown()`` stops it)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(EdgeCollector(workers))
    server, _thread = start_http_server(port, bind, registry=registry)
    log.info("metrics on http://%s:%d/metrics", bind, port)
    return server
