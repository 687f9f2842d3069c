"""URLs of the engines beyond one Redis: Redis Cluster and Sentinel (tests/engines runs them)."""

from django.test import override_settings

from distributed_tasks.brokers import celery_conf
from distributed_tasks.checks import E014, check_settings
from distributed_tasks.connection import Endpoints


def test_a_cluster_url_lists_its_startup_nodes():
    ends = Endpoints.parse("rediss+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2", 6379)
    assert ends.hosts == (("10.0.0.1", 7000), ("10.0.0.2", 6379))
    assert (ends.username, ends.password, ends.tls) == ("u", "p@ss", True)


def test_a_sentinel_url_names_its_service_and_database():
    ends = Endpoints.parse("sentinel://:pw@s1:26380,s2/cache/2", 26379)
    assert ends.hosts == (("s1", 26380), ("s2", 26379))
    assert (ends.service, ends.db, ends.password) == ("cache", 2, "pw")
    assert (Endpoints.parse("sentinel://s1", 26379).service, ends.tls) == ("mymaster", False)


def test_a_sentinel_broker_url_becomes_kombus_form():
    assert celery_conf("sentinel://:pw@s1:26380,s2/cache/2", {"x": 1}) == {
        "broker_url": "sentinel://:pw@s1:26380/2;sentinel://:pw@s2:26379/2",
        "broker_transport_options": {"x": 1, "master_name": "cache"},
    }
    kombu_form = "sentinel://s1:26379;sentinel://s2:26379"
    assert celery_conf(kombu_form, {})["broker_url"] == kombu_form
    assert celery_conf("amqp://guest@rabbit//", {"x": 1}) == {
        "broker_url": "amqp://guest@rabbit//",
        "broker_transport_options": {"x": 1},
    }


def test_a_redis_cluster_cannot_be_the_celery_broker():
    cluster = "redis+cluster://127.0.0.1:7000"
    with override_settings(DISTRIBUTED_TASKS={"REDIS_URL": cluster}):
        (error,) = check_settings()
    assert error.id == E014
    assert "BROKER_URL" in error.hint
    with override_settings(
        DISTRIBUTED_TASKS={"REDIS_URL": cluster, "BROKER_URL": "redis://127.0.0.1:6379/1"}
    ):
        assert check_settings() == []
