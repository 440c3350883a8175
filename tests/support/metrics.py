"""Metric families read back as Prometheus would store them: through prometheus_client's
own text format and parser."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families


class _Fixed:
    def __init__(self, metrics):
        self.metrics = metrics

    def collect(self):
        return self.metrics


def scrape(metrics) -> dict:
    """Families through the text format and back: {family name: family}."""
    registry = CollectorRegistry()
    registry.register(_Fixed(metrics))
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family, name: str = None) -> dict:
    """{sorted (label, value) pairs: value} of the family's samples named `name` (default: the family's name)."""
    name = name or family.name
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == name}


def by_member(family, name: str = None) -> dict:
    return {dict(k)["member"]: v for k, v in samples(family, name).items()}
