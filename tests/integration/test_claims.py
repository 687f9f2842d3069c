"""The Lua scripts against a real Redis: who may claim, update and release a name."""

import time

from distributed_tasks import claims
from distributed_tasks.claims import ClaimOutcome, ClaimReply


def queued(run_id: str, attempt: int = 1, **extra):
    return {
        "state": "QUEUED",
        "run_id": run_id,
        "node": "w@h",
        "attempt": attempt,
        "queued_at": time.time(),
        **extra,
    }


def claim(run_id, reuse="allow", **kw):
    return ClaimReply.parse(claims.claim("default", "n", queued(run_id), reuse=reuse, **kw))


def finish(run_id, state="DONE", attempt=1, ttl=60_000):
    fields = queued(run_id, attempt, state=state, finished_at=time.time())
    return claims.update("default", "n", run_id, attempt, fields, ttl=ttl)


def test_first_claim_wins_and_publishes_the_status():
    assert claim("r1").outcome is ClaimOutcome.CLAIMED
    assert claims.read("default", "n")["state"] == "QUEUED"
    second = claim("r2")
    assert second.outcome is ClaimOutcome.ACTIVE
    assert (second.run_id, second.node, second.state) == ("r1", "w@h", "QUEUED")


def test_names_are_scoped_by_task_list():
    claims.claim("a", "n", queued("r1"), reuse="allow")
    reply = ClaimReply.parse(claims.claim("b", "n", queued("r2"), reuse="allow"))
    assert reply.outcome is ClaimOutcome.CLAIMED


def test_finished_name_follows_the_reuse_policy():
    claim("r1")
    assert finish("r1", "DONE") == 1
    assert claim("r2", reuse="reject").outcome is ClaimOutcome.RESERVED
    assert claim("r2", reuse="allow_failed_only").outcome is ClaimOutcome.RESERVED
    assert claim("r2", reuse="allow").outcome is ClaimOutcome.CLAIMED


def test_failed_name_may_be_reused_with_allow_failed_only():
    claim("r1")
    finish("r1", "FAILED")
    assert claim("r2", reuse="allow_failed_only").outcome is ClaimOutcome.CLAIMED


def test_finished_status_expires_after_its_ttl(redis, poll):
    claim("r1")
    finish("r1", ttl=150)
    poll(lambda: not claims.read("default", "n"), timeout=2, message="status expiry")


def test_update_refuses_another_run_and_older_attempts():
    claim("r1")
    assert claims.update("default", "n", "r2", 1, queued("r2", state="RUNNING")) == 0
    assert claims.update("default", "n", "r1", 2, queued("r1", 2, state="QUEUED")) == 1
    assert claims.update("default", "n", "r1", 1, queued("r1", 1, state="RUNNING")) == 0
    assert claims.read("default", "n")["attempt"] == "2"


def test_update_recreates_a_flushed_status(redis):
    claim("r1")
    redis.flushdb()
    assert claims.update("default", "n", "r1", 1, queued("r1", state="RUNNING")) == 1
    assert claims.read("default", "n")["state"] == "RUNNING"


def test_the_same_claim_run_again_is_claimed_not_refused_by_itself():
    """redis-py re-sends a command whose reply a dropped connection lost: the claim of
    run r1 then meets its own QUEUED claim, which is no conflict."""
    assert claim("r1").outcome is ClaimOutcome.CLAIMED
    assert claim("r1").outcome is ClaimOutcome.CLAIMED
    assert claim("r2").outcome is ClaimOutcome.ACTIVE
    finish("r1")
    assert claim("r1", reuse="reject").outcome is ClaimOutcome.RESERVED  # finished: not again


def test_release_is_compare_and_delete():
    claim("r1")
    assert claims.release("default", "n", "someone-else") == 0
    assert claims.read("default", "n")
    assert claims.release("default", "n", "r1") == 1
    assert claims.read("default", "n") == {}


def test_stale_claim_can_be_replaced_only_by_naming_it():
    claim("r1")
    assert claim("r2", replace_run_id="other").outcome is ClaimOutcome.ACTIVE
    assert claim("r2", replace_run_id="r1").outcome is ClaimOutcome.CLAIMED
    assert claims.read("default", "n")["run_id"] == "r2"


def test_fill_never_overwrites():
    claim("r1")
    assert claims.fill("default", "n", queued("r0", state="DONE")) == 0
    assert claims.read("default", "n")["run_id"] == "r1"


def test_fields_of_one_attempt_accumulate_and_a_new_attempt_replaces_them():
    claim("r1")
    claims.update("default", "n", "r1", 1, queued("r1", state="RUNNING", started_at=5.0))
    claims.update("default", "n", "r1", 1, queued("r1", state="DONE", finished_at=6.0))
    assert claims.read("default", "n")["started_at"] == "5.0"
    claims.update("default", "n", "r1", 2, queued("r1", 2, state="QUEUED"))
    assert "started_at" not in claims.read("default", "n")
