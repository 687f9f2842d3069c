"""Partitions, not crashes: a node, then the leader, cut off from Redis while they run.

Two hosts of their own (``tests.engines.netns``: a network namespace each, one veth
pair to a private Redis, one to a TCP proxy in front of PostgreSQL). ``cut()`` takes
the host's way to Redis (and so to the broker, the same Redis) away while the
database still answers: the processes keep running, as on a host that lost part of
its network. A node and a beat run on the root side as the survivors.
"""

import datetime as dt
import signal
import time

import pytest
from django.conf import settings

from distributed_tasks import State, get_status, start_async
from distributed_tasks.api import get_client
from distributed_tasks.conf import get_settings
from distributed_tasks.connection import SOCKET_TIMEOUT
from distributed_tasks.fencing import leadership
from distributed_tasks.lease import current_leader
from distributed_tasks.models import TaskRun
from tests import tasks
from tests.cluster.test_periodic import wait_for_slots
from tests.engines import servers
from tests.engines.conftest import Engine
from tests.engines.netns import Host
from tests.engines.scenarios import FenceWatch, name_placed_on
from tests.proxy import TcpProxy
from tests.support import ROOT, poll_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CUT, FREE = "cut@part", "free@part"
CUT_BEAT, FREE_BEAT = "beat-cut", "beat-free"
SLEEP = 10.0  # longer than a partition takes to be noticed: the cut run outlives it
FENCED = "discarded: the run was already ended elsewhere"


@pytest.fixture(scope="module")
def hosts():
    made: list[Host] = []
    try:
        made += [Host(1).create(), Host(2).create()]
        yield made
    finally:
        for host in made:
            host.remove()


@pytest.fixture(scope="module")
def redis_port(hosts):
    group = servers.Servers("partition Redis")
    (port,) = servers.free_ports(1, start=7400)
    try:
        addresses = [servers.HOST, *(host.redis_address for host in hosts)]
        group.start(port, "--bind", *addresses, "--protected-mode", "no")
        yield port
    finally:
        group.stop()


@pytest.fixture(scope="module")
def engine(redis_port):
    return Engine(redis_url=f"redis://{servers.HOST}:{redis_port}/0")


@pytest.fixture(scope="module")
def proxies(hosts):
    db = settings.DATABASES["default"]
    started = [
        TcpProxy(db["HOST"], int(db["PORT"]), host=host.postgres_address).start() for host in hosts
    ]
    yield dict(zip((h.name for h in hosts), started, strict=True))
    for proxy in started:
        proxy.stop()


def inside(host: Host, proxies, redis_port: int) -> dict:
    """Spawn arguments of a process on ``host``: its Redis and PostgreSQL addresses."""
    return {
        "program": [*host.program(), str(ROOT / "manage.py")],
        "DT_TEST_REDIS_URL": f"redis://{host.redis_address}:{redis_port}/0",
        "DT_PG_HOST": host.postgres_address,
        "DT_PG_PORT": str(proxies[host.name].port),
    }


@pytest.fixture(scope="module")
def partitioned(cluster_factory, hosts, proxies, redis_port):
    node_host, beat_host = hosts
    c = cluster_factory
    c.spawn(CUT, ["dt_worker", "-n", CUT, "-c", "3"], **inside(node_host, proxies, redis_port))
    c.start_worker(FREE, concurrency=2)
    c.spawn(CUT_BEAT, ["dt_beat", "--name", CUT_BEAT], **inside(beat_host, proxies, redis_port))
    c.wait_leader()  # the beat on the host to be cut leads first
    c.start_beat(FREE_BEAT)
    return c


@pytest.fixture
def part(partitioned):
    partitioned.wait_live(CUT, FREE)
    partitioned.wait_leader()
    return partitioned


def test_a_node_cut_off_from_redis_is_lost_its_runs_rescued_and_its_late_writes_fenced(part, hosts):
    node_host, _ = hosts
    once, twice, later = (name_placed_on(CUT, p) for p in ("cut-once", "cut-twice", "cut-later"))
    # Pinned: placement would send the second run elsewhere while a periodic run
    # holds one of the node's slots.
    get_client().start_on(CUT, tasks.sleep, [SLEEP], name=once)
    get_client().start_on(CUT, tasks.sleep, [SLEEP], name=twice, max_attempts=2)
    running = TaskRun.objects.filter(name__in=[once, twice], node=CUT, state=State.RUNNING)
    poll_until(lambda: running.count() == 2, timeout=15, message="both runs RUNNING on the node")
    node_host.cut()
    cut_at = time.monotonic()
    try:
        conf = get_settings()
        lost = poll_until(
            lambda: (r := TaskRun.objects.get(name=once)).state == State.FAILED and r,
            timeout=conf.NODE_TIMEOUT + conf.TICK_INTERVAL + 2,
            message=f"{once} to end once {CUT} is lost",
        )
        print(f"\npartitioned node declared lost after {time.monotonic() - cut_at:.2f} s")
        assert (lost.reason, lost.attempt) == ("node_lost", 1) and CUT in lost.error
        moved = TaskRun.objects.get(name=twice)
        assert (moved.node, moved.attempt) == (FREE, 2)  # rescued per its policy
        assert start_async(tasks.add, [1, 2], name=later).node == FREE  # it takes no work
    finally:
        node_host.heal()
    # The cut execution ends after the heal and reports: both reports are refused.
    poll_until(
        lambda: part.log(CUT, tail=20000).count(FENCED) >= 2,
        timeout=SLEEP + 10,
        message=f"{CUT}'s late outcomes to be fenced",
    )
    assert (get_status(once).state, get_status(once).reason) == (State.FAILED, "node_lost")
    done = poll_until(
        lambda: (s := get_status(twice)).is_finished and s, timeout=SLEEP + 10, message=twice
    )
    assert (done.state, done.node) == (State.DONE, FREE)
    assert TaskRun.objects.get(name=twice).executions == 2  # the documented overlap
    part.wait_live(CUT)  # back, and a member again


def test_a_leader_cut_off_from_redis_stops_within_its_lease_and_no_slot_runs_twice(part, hosts):
    _, beat_host = hosts
    conf = get_settings()
    leader = part.wait_leader()
    if leader.holder != CUT_BEAT:  # lead from the host to be cut
        part.kill(leader.holder, signal.SIGTERM)
        leader = part.wait_leader(other_than=leader.holder)
        part.revive()
    assert leader.holder == CUT_BEAT
    watch = FenceWatch()
    watch.start()
    # Cut a leader that has acted: its epoch's fenced tick note is what the end checks.
    poll_until(lambda: leader.epoch in watch.last_tick, timeout=10, message="a first tick")
    began = dt.datetime.now(dt.UTC)
    beat_host.cut()
    cut_at = time.monotonic()
    try:
        successor = part.wait_leader(other_than=CUT_BEAT, timeout=conf.LEASE_TTL + 1)
        print(f"\npartitioned leader replaced after {time.monotonic() - cut_at:.2f} s")
        assert successor.epoch > leader.epoch
        times = [s for s, _ in wait_for_slots("counter", began, 6, timeout=20)]
        # It notices, at the latest when its Redis call times out (SOCKET_TIMEOUT).
        poll_until(
            lambda: "lost the orchestrator lease" in part.log(CUT_BEAT, tail=20000),
            timeout=conf.LEASE_TTL + SOCKET_TIMEOUT,
            message="the cut leader to give its lease up",
        )
    finally:
        beat_host.heal()
        watch.stop()
    ticks = watch.last_tick
    # Its last act (a fenced tick note) came within its lease of the cut.
    assert leader.epoch in ticks
    assert ticks[leader.epoch] <= began + dt.timedelta(seconds=conf.LEASE_TTL), ticks
    assert len(times) == len(set(times))  # no periodic slot ran twice
    poll_until(
        lambda: "works again" in part.log(CUT_BEAT, tail=20000),
        timeout=15,
        message="the cut beat to reach Redis again",
    )
    assert current_leader().holder == successor.holder  # it came back as a follower
    assert leadership().epoch == successor.epoch
