"""A Cloud Monitoring MetricService on a loopback gRPC port that records what it is sent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport
from google.protobuf import empty_pb2

from infra.gcp.monitoring import CloudMonitoringMetrics

PROJECT = "relay-test"


class MetricServer:
    """A MetricService that records each CreateTimeSeries request, or fails on demand."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.failure: Any = None  # a grpc.StatusCode to answer with instead of OK
        self.received = threading.Condition()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.method_handlers_generic_handler(
            "google.monitoring.v3.MetricService",
            {
                "CreateTimeSeries": grpc.unary_unary_rpc_method_handler(
                    self._create_time_series,
                    request_deserializer=monitoring_v3.CreateTimeSeriesRequest.deserialize,
                    response_serializer=empty_pb2.Empty.SerializeToString,
                )
            },
        )
        self._server.add_generic_rpc_handlers((handler,))
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"
        self._server.start()

    def _create_time_series(self, request: Any, context: Any) -> Any:
        with self.received:
            self.requests.append(request)
            self.received.notify_all()
        if self.failure is not None:
            context.abort(self.failure, "injected failure")
        return empty_pb2.Empty()

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        with self.received:
            assert self.received.wait_for(lambda: len(self.requests) >= count, timeout)

    def series(self) -> list[Any]:
        return [one for request in self.requests for one in request.time_series]

    def stop(self) -> None:
        self._server.stop(grace=None)


@pytest.fixture
def metric_server() -> Iterator[MetricServer]:
    server = MetricServer()
    yield server
    server.stop()


def make_sink(server: MetricServer, **kwargs: Any) -> CloudMonitoringMetrics:
    def client() -> Any:
        channel = grpc.insecure_channel(server.address)
        transport = MetricServiceGrpcTransport(channel=channel)
        return monitoring_v3.MetricServiceClient(transport=transport)

    kwargs.setdefault("interval_seconds", 3600.0)
    kwargs.setdefault("min_point_interval_seconds", 0.0)
    return CloudMonitoringMetrics(
        project=PROJECT,
        client_factory=client,
        resource_labels={
            "project_id": PROJECT,
            "location": "global",
            "namespace": "relay-worker",
            "job": "relay-worker-00001-abc",
            "task_id": "instance-1",
        },
        **kwargs,
    )
