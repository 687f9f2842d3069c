"""Which Redis errors a caller's read, cancel or retry reports as ClusterUnavailable."""

import pytest
from redis.exceptions import ConnectionError, ReadOnlyError, ResponseError, TryAgainError

from distributed_tasks import ClusterUnavailable
from distributed_tasks.resilience import unanswered


@pytest.mark.parametrize(
    "error",
    [ConnectionError("refused"), ReadOnlyError("a replica now"), TryAgainError("slot moving")],
)
def test_redis_that_cannot_serve_now_is_cluster_unavailable(error):
    expected = r"Redis does not answer .*; try later"
    with pytest.raises(ClusterUnavailable, match=expected), unanswered("default", "try later"):
        raise error


def test_an_error_reply_about_the_call_itself_raises_as_it_is():
    with pytest.raises(ResponseError, match="WRONGTYPE"), unanswered("default", "try later"):
        raise ResponseError("WRONGTYPE Operation against a key holding the wrong kind")
