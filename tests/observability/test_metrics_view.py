"""GET /tasks/metrics: who may read it, and the counters of the caller's process."""

from __future__ import annotations

import pytest
from django.test import override_settings

from distributed_tasks import AlreadyRunning, InvalidName, start_async
from tests.observability.conftest import sample

pytestmark = pytest.mark.django_db(transaction=True)  # starts publish at once

TOKEN = "s3cret-token"


def _settings(**extra):
    from django.conf import settings

    return override_settings(DISTRIBUTED_TASKS={**settings.DISTRIBUTED_TASKS, **extra})


def test_never_public_staff_need_the_permission_and_a_token_works(client, django_user_model):
    assert client.get("/tasks/metrics").status_code == 403
    staff = django_user_model.objects.create_user("staff", is_staff=True)
    client.force_login(staff)
    response = client.get("/tasks/metrics")
    assert response.status_code == 403 and "view_taskrun" in response.json()["detail"]
    client.logout()
    assert client.get("/tasks/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 403
    with _settings(METRICS_TOKEN=TOKEN):
        assert client.get("/tasks/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
        ok = client.get("/tasks/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert ok.status_code == 200 and b"dt_up" in ok.content
    assert client.post("/tasks/metrics").status_code == 405


def test_metrics_off_answers_404_saying_how_to_turn_them_on(scraper, client):
    with _settings(METRICS=False):
        response = client.get("/tasks/metrics")
        from distributed_tasks import signals

        assert not signals.run_queued.receivers  # nothing connected, nothing recorded
    assert response.status_code == 404 and "METRICS" in response.json()["detail"]


def test_starts_and_refusals_by_reason_and_node_gauges(scraper, node):
    before = scraper()
    start_async("tests.tasks.add", [1, 2], name="m-dup", task_list="obs")
    with pytest.raises(AlreadyRunning):
        start_async("tests.tasks.add", [1, 2], name="m-dup", task_list="obs")
    with pytest.raises(InvalidName):
        start_async("tests.tasks.add", [1, 2], name="", task_list="obs")
    after = scraper()

    def delta(name, **labels):
        return (sample(after, name, **labels) or 0) - (sample(before, name, **labels) or 0)

    assert delta("dt_runs_started_total", task_list="obs") == 1
    assert delta("dt_runs_refused_total", task_list="obs", reason="already_running") == 1
    assert delta("dt_runs_refused_total", task_list="obs", reason="invalid") == 1
    # The idle node holds the QUEUED run; nothing consumes its queue.
    assert sample(after, "dt_node_live", node=node.name) == 1
    assert sample(after, "dt_node_active_runs", node=node.name) == 1
    assert sample(after, "dt_node_queue_depth", node=node.name) == 1
    assert sample(after, "dt_runs_active", state="QUEUED") == 1
    assert 0 <= sample(after, "dt_node_heartbeat_age_seconds", node=node.name) < 5
    assert (
        sample(after, "dt_up", service="redis") == sample(after, "dt_up", service="database") == 1
    )
    assert sample(after, "dt_leader_epoch") == 0  # no dt_beat here


def test_grafana_dashboard_uses_only_metrics_we_expose(client):
    import json
    import re

    from prometheus_client.parser import text_string_to_metric_families

    from distributed_tasks import scrape
    from tests.support import ROOT

    text = scrape.render(scrape.local_collector(), scrape.ClusterCollector()).decode()
    exposed = {family.name for family in text_string_to_metric_families(text)}
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {
        re.sub(r"_(total|bucket|sum|count)$", "", name)
        for expr in exprs
        for name in re.findall(r"\bdt_[a-z_]+", expr)
    }
    assert len(exprs) >= 20 and used <= exposed, sorted(used - exposed)


def test_cluster_gauges_cost_the_same_queries_for_any_number_of_nodes(node, heavy):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from distributed_tasks import scrape
    from distributed_tasks.nodes import Heartbeat, NodeInfo

    seen: list[str] = []

    def queries(collector) -> int:
        with CaptureQueriesContext(connection) as ctx:
            seen.append(scrape.render(collector).decode())
        return len(ctx.captured_queries)

    two = queries(scrape.ClusterCollector())
    third = Heartbeat(NodeInfo(name="third@test"))
    third.beat()
    try:
        three = queries(scrape.ClusterCollector())
    finally:
        third.stop(leave=True)
    assert 'dt_node_live{node="third@test"} 1.0' in seen[1] and "third@test" not in seen[0]
    # One grouped query over active runs and one over periodic tasks, however many nodes;
    # a node's own port reads only the first.
    assert two == three == 2
    assert queries(scrape.ClusterCollector(node=node.name)) == 1


def test_redis_down_says_so_and_reports_no_leader_rather_than_none(scraper):
    with _settings(REDIS_URL="redis://127.0.0.1:1/0"):  # nothing listens on port 1
        samples = scraper()
    assert sample(samples, "dt_up", service="redis") == 0
    assert sample(samples, "dt_up", service="database") == 1
    cluster = ("dt_leader", "dt_leader_epoch", "dt_node_live", "dt_node_heartbeat_age_seconds")
    gauges = [n for n, _labels in samples if n in cluster]
    assert gauges == []  # unknown, not absent: no "no leader" alert on a Redis outage
