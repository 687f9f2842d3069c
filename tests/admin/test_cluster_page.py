"""The cluster page: nodes, ring shares, loads, orchestrator, counts, banner, permissions."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from distributed_tasks import keys
from distributed_tasks.fencing import claim_epoch
from distributed_tasks.lease import Lease
from distributed_tasks.models import TaskRun
from distributed_tasks.ring import Ring
from tests.admin.support import CHANGELIST, CLUSTER, page_while_redis_is_down, queued

pytestmark = pytest.mark.django_db(transaction=True)


def cells(html: str, node: str) -> list[str]:
    """The text of the cells of one node's row."""
    row = re.search(
        rf'<tr class="dt-node">\s*<th scope="row">{re.escape(node)}</th>(.*?)</tr>', html, re.S
    )
    assert row, f"no row for {node}"
    return [
        re.sub(r"<[^>]+>", "", cell).strip()
        for cell in re.findall(r"<td[^>]*>(.*?)</td>", row[1], re.S)
    ]


def test_shows_nodes_shares_loads_and_the_leader(admin_client, node, heavy, leader):
    queued("one")
    queued("two")
    queued("ci-one", task_list="ci")
    TaskRun.objects.create(
        name="old", function="tests.tasks.add", state="DONE", finished_at=timezone.now()
    )
    claim_epoch(leader.epoch, leader.holder)
    response = admin_client.get(reverse(CLUSTER))
    assert response.status_code == 200
    html = response.content.decode()

    assert "dt-health-banner" not in html  # healthy: node, leader, Redis intact
    assert '<strong class="dt-status-healthy">healthy</strong>' in html
    shares = Ring({"idle@test": 1, "heavy@test": 3}).shares()
    idle, ci = cells(html, "idle@test"), cells(html, "heavy@test")
    assert idle[1:4] == [f"{shares['idle@test'] * 100:.1f} %", "2", "2"]  # share, active, queue
    assert ci[1:6] == [f"{shares['heavy@test'] * 100:.1f} %", "1", "1", "3", "ci"]
    assert float(idle[0].removesuffix(" s")) < settings.DISTRIBUTED_TASKS.get("NODE_TIMEOUT", 5)
    assert "?node=idle%40test&amp;state=active" in html  # active runs link to the list

    assert f"beat@test, epoch {leader.epoch}, lease valid for another" in html
    assert f"epoch {leader.epoch}, registered by beat@test" in html
    assert re.search(r"last tick \d+\.\d s ago", html)

    counts = {row.state: row.count for row in response.context["states"]}
    assert counts == {"QUEUED": 3, "RUNNING": 0, "DONE": 1, "FAILED": 0}
    assert '<a href="/admin/distributed_tasks/taskrun/?state=DONE">1</a>' in html


def test_a_leader_that_has_not_registered_its_epoch_yet(admin_client, node, redis):
    """Between winning the lease and its first write, Redis and the database differ."""
    claim_epoch(5, "beat@before")
    redis.set(keys.epoch_key(), 5)
    lease = Lease("beat@new", ttl=30)
    assert lease.try_acquire() and lease.epoch == 6
    try:
        html = admin_client.get(reverse(CLUSTER)).content.decode()
    finally:
        lease.release()
    assert "beat@new, epoch 6, lease valid for another" in html
    assert "epoch 5, registered by beat@before" in html
    assert "(the leader registers epoch 6 before its first write)" in html


def test_banner_when_no_orchestrator_leads(admin_client, node):
    html = admin_client.get(reverse(CLUSTER)).content.decode()
    assert '<ul class="messagelist dt-health-banner">' in html
    assert "<strong>The cluster is degraded.</strong>" in html
    assert '<li class="warning">No orchestrator holds the lease' in html
    assert "nobody holds the lease: start <code>manage.py dt_beat</code>" in html


def test_banner_when_no_node_is_live(admin_client, leader):
    html = admin_client.get(reverse(CLUSTER)).content.decode()
    assert "No node is live, and every new start is refused." in html
    assert "No live node: every start is refused." in html


def test_redis_down_is_a_page_with_a_banner_not_an_error(admin_client):
    html = page_while_redis_is_down(admin_client, CLUSTER)
    assert "database answers" in html


def test_runs_list_links_to_the_page_and_shows_the_banner(admin_client, node):
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert f'<li><a href="{reverse(CLUSTER)}">Cluster</a></li>' in html
    assert f'<a href="{reverse(CLUSTER)}">Open the cluster page</a>' in html
    assert "No orchestrator holds the lease" in html


def test_runs_list_has_no_banner_when_healthy(admin_client, node, leader):
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "dt-health-banner" not in html


def test_app_index_links_to_the_page(staff_client):
    html = staff_client("view").get(reverse("admin:app_list", args=["distributed_tasks"]))
    link = re.search(r'<a href="([^"]+)"[^>]*>Nodes, ring and orchestrator</a>', html.text)
    assert link and link[1] == reverse(CLUSTER)


@pytest.mark.parametrize(
    ("permissions", "status"),
    [(("view",), 200), (("change",), 200), (("add",), 403), ((), 403)],
)
def test_staff_need_a_permission_to_read_runs(staff_client, permissions, status):
    response = staff_client(*permissions).get(reverse(CLUSTER))
    assert response.status_code == status
    if status == 403:
        index = staff_client(*permissions, username="again").get(
            reverse("admin:app_list", args=["distributed_tasks"])
        )
        assert reverse(CLUSTER).encode() not in index.content


def test_anonymous_and_non_staff_users_are_sent_to_log_in(django_user_model):
    login = reverse("admin:login")
    anonymous = Client().get(reverse(CLUSTER))
    assert (anonymous.status_code, anonymous["Location"].split("?")[0]) == (302, login)
    user = django_user_model.objects.create_user("visitor", password="pw")  # not staff
    client = Client()
    client.force_login(user)
    response = client.get(reverse(CLUSTER))
    assert (response.status_code, response["Location"].split("?")[0]) == (302, login)
