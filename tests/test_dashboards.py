"""Observability as compose runs it: Prometheus scrapes every Midcall process, and the
provisioned Grafana dashboard asks only for metrics that exist, covering what operators
watch (calls by tool, status and code, latency, messages in hand, redeliveries, dead
letters, breakers, lag per stream)."""

import json
import re
from typing import Any

import yaml
from prometheus_client.metrics import MetricWrapperBase

from shared.observability import metrics
from tests.test_infra import ROOT

INFRA = ROOT / "infra"
# What Midcall's metrics are exposed as (a counter's samples end in _total, a histogram's
# in _bucket, _sum and _count).
SUFFIXES = re.compile(r"_(total|bucket|sum|count)$")
# The exporter's JetStream metrics the dashboard reads (prometheus-nats-exporter -jsz=all).
EXPORTED = {"jetstream_consumer_num_pending", "jetstream_consumer_num_ack_pending"}
HOT = {"dispatcher", "http-executor", "code-executor", "result-injector"}
REST = {"registry": 8700, "billing": 8701}


def load(path: str) -> Any:
    return yaml.safe_load((ROOT / path).read_text())


def dashboard() -> dict[str, Any]:
    return dict(json.loads((INFRA / "grafana" / "dashboards" / "midcall.json").read_text()))


def expressions() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def ours() -> set[str]:
    return {
        next(iter(collector.describe())).name
        for collector in vars(metrics).values()
        if isinstance(collector, MetricWrapperBase)
    }


def test_the_dashboard_reads_only_metrics_that_exist_and_every_one_of_ours() -> None:
    named = {name for expr in expressions() for name in re.findall(r"[a-z_]+(?=[{\[)\s])", expr)}
    midcall = {SUFFIXES.sub("", name) for name in named if name.startswith("midcall_")}
    nats = {name for name in named if name.startswith("jetstream_")}

    assert midcall == ours()
    assert nats == EXPORTED


def test_the_dashboard_is_on_the_provisioned_data_source() -> None:
    source = load("infra/grafana/provisioning/datasources/prometheus.yml")["datasources"][0]

    assert source["url"] == "http://prometheus:9090"
    assert {panel["datasource"]["uid"] for panel in dashboard()["panels"]} == {source["uid"]}


def test_prometheus_scrapes_every_midcall_process_of_both_stacks() -> None:
    compose = load("compose.yaml")["services"]
    scraped: dict[str, int] = {}
    for job in load("infra/prometheus.yml")["scrape_configs"]:
        for found in job.get("dns_sd_configs", []):
            scraped |= dict.fromkeys(found["names"], found["port"])
    running = {
        name: service["command"][1]
        for name, service in compose.items()
        if service.get("command", [None])[0] == "run"
    }

    assert running, "compose runs no Midcall service"
    for name, role in running.items():
        expected = 9100 if role in HOT else REST[role]
        assert scraped.get(name) == expected, name
    assert compose["nats-exporter"]["command"][-1] == "http://nats:8222"


def test_grafana_mounts_what_is_provisioned() -> None:
    mounts = [
        volume.split(":")[0] for volume in load("compose.yaml")["services"]["grafana"]["volumes"]
    ]

    assert all((ROOT / mount).is_dir() for mount in mounts)
    provider = load("infra/grafana/provisioning/dashboards/midcall.yml")["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
