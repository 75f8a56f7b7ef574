"""Evidence collectors against the real shared PostgreSQL and Redis (read only), and a dead Prometheus."""

from __future__ import annotations

import asyncio

import pytest

from agent.config.model import parse_config
from agent.runtime.evidence import EvidenceCollector
from tests.support.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SECRET = "evidence-secret-value"


def test_collectors_answer_or_say_why_and_never_leak_secrets() -> None:
    dead = free_port()
    config = parse_config(f"""
checks:
  - name: db
    type: postgres
    dsn: "postgresql://postgres@127.0.0.1:5432/postgres?application_name={SECRET}"
  - name: cache
    type: redis
    host: 127.0.0.1
    port: 6379
  - name: errors
    type: prometheus
    url: http://127.0.0.1:{dead}
    query: 'rate(http_requests_total{{token="{SECRET}"}}[5m])'
    conditions: ["value < 1"]
    headers: {{Authorization: "Bearer {SECRET}"}}
runbooks:
  - name: db-down
    match: {{checks: [db, cache]}}
incidents: {{evidence: {{timeout: 3s, max_chars: 2000}}}}
""")
    collector = EvidenceCollector(config)
    book = config.runbooks[0]
    db = asyncio.run(collector.collect(book, config.check("db"), None))
    by_name = {e.name: e for e in db}
    pg = by_name["pg_stat_activity of db"]
    assert pg.ok, pg.output
    assert "max_connections" in pg.output
    assert "state | sessions" in pg.output
    prom = by_name["prometheus query of errors"]
    assert not prom.ok
    assert prom.output.startswith("could not collect:")
    cache = asyncio.run(collector.collect(book, config.check("cache"), None))
    redis = next(e for e in cache if e.name == "redis INFO of cache")
    assert redis.ok, redis.output
    assert "redis_version:" in redis.output
    for item in [*db, *cache]:
        assert SECRET not in item.output
        assert len(item.output) <= 2000 + 60
