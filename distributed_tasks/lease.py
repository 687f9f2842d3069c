"""The orchestrator lease: one leader among any number of ``dt_beat`` processes.

Unlike celery-singleton (a lock that never expires after a crash), celery-once
(released with a bare DEL) and RedBeat (25-30 minutes to fail over), the lease is

- **token-owned**: its value holds a random token; renew and release are
  compare-and-set Lua, so nobody else's lease is ever extended or deleted;
- **short**: ``LEASE_TTL`` (5 s), renewed every third of it;
- **fenced**: every acquisition INCRs an epoch; the leader's database writes
  carry it and a lower epoch is refused (``Leadership`` in models.py);
- **fail-closed and clock-free**: the holder trusts its lease only until
  ``t_sent + TTL * (1 - margin)`` on its own monotonic clock, where ``t_sent``
  is taken *before* the command that set the TTL was sent. No wall clock of
  any host is compared with another's; a paused process (SIGSTOP, GC, swap)
  finds its lease expired the moment it resumes.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from distributed_tasks import keys, scripts, signals
from distributed_tasks.conf import get_settings
from distributed_tasks.connection import get_redis, text
from distributed_tasks.outage import REDIS_ERRORS

logger = logging.getLogger("distributed_tasks.lease")

# Part of the TTL the holder gives up, for clock rate drift and scheduling delays.
SAFETY_MARGIN = 0.1

# KEYS[1] lease, KEYS[2] epoch. ARGV[1] holder, ARGV[2] token, ARGV[3] TTL ms.
# Returns {epoch, value} when acquired (the value names holder, token and epoch, so
# readers see who leads), or 0 when someone else holds it.
ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local epoch = redis.call('INCR', KEYS[2])
local value = cjson.encode({holder = ARGV[1], token = ARGV[2], epoch = epoch})
redis.call('SET', KEYS[1], value, 'PX', ARGV[3])
return {epoch, value}
"""

# KEYS[1] lease. ARGV[1] value, ARGV[2] TTL ms. Extends only the caller's own lease.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS[1] lease. ARGV[1] value. Deletes only the caller's own lease.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] lease, KEYS[2] epoch. ARGV[1] value, ARGV[2] minimum epoch, ARGV[3] TTL ms.
# After Redis lost the epoch counter, the holder raises it past what the database saw,
# and rewrites its lease value with that epoch (same token, same remaining TTL), so
# everyone who reads the lease (dt_nodes, dt_check, the cluster page) sees the epoch
# the leader acts with. Returns {epoch, value}, or 0 when the lease is not the caller's.
RAISE_EPOCH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local epoch = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), tonumber(ARGV[2]))
redis.call('SET', KEYS[2], epoch)
local data = cjson.decode(ARGV[1])
if tonumber(data.epoch) == epoch then return {epoch, ARGV[1]} end
local value = cjson.encode({holder = data.holder, token = data.token, epoch = epoch})
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 1 then ttl = ARGV[3] end
redis.call('SET', KEYS[1], value, 'PX', ttl)
return {epoch, value}
"""


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    """Who holds the lease, as anyone can read it."""

    holder: str
    epoch: int
    ttl_ms: int


def current_leader() -> LeaderInfo | None:
    """The lease holder, or None when nobody leads (or Redis does not answer)."""
    try:
        pipe = get_redis().pipeline(transaction=False)
        pipe.get(keys.lease_key())
        pipe.pttl(keys.lease_key())
        raw, ttl = pipe.execute()
    except REDIS_ERRORS:
        return None
    if not raw:
        return None
    try:
        data = json.loads(text(raw))
        return LeaderInfo(holder=data["holder"], epoch=int(data["epoch"]), ttl_ms=int(ttl))
    except (ValueError, KeyError, TypeError):
        return None


class Lease:
    """One process's handle on the lease. Not thread-safe: one keeper thread drives it."""

    def __init__(self, holder: str, *, ttl: float | None = None, client: Any = None) -> None:
        self.holder = holder
        self.client = client  # None: the process-wide client
        self.ttl = ttl if ttl is not None else get_settings().LEASE_TTL
        self.token = uuid.uuid4().hex
        self.epoch = 0
        self._value = ""
        self._valid_until = 0.0
        # Why the last renew() failed when Redis did not answer (None otherwise): the
        # keeper counts it as an outage, so it logs the moment Redis answers again.
        self.failure: Exception | None = None

    @property
    def ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    def is_held(self) -> bool:
        """True only while the lease is certainly ours (fail-closed, monotonic clock)."""
        return bool(self._value) and time.monotonic() < self._valid_until

    def remaining(self) -> float:
        return max(0.0, self._valid_until - time.monotonic()) if self._value else 0.0

    def _trust_from(self, sent: float) -> None:
        self._valid_until = sent + self.ttl * (1 - SAFETY_MARGIN)

    def _script(self, source: str, *keys_: str, args: list):
        if self.client is None:
            return scripts.script(source)(keys=list(keys_), args=args)
        return self.client.register_script(source)(keys=list(keys_), args=args)

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; on success ``epoch`` is the new, higher epoch.

        Raises ``redis.RedisError`` when Redis does not answer (no leader then).
        """
        if self.is_held():
            return self.renew()
        sent = time.monotonic()
        reply = self._script(
            ACQUIRE, keys.lease_key(), keys.epoch_key(), args=[self.holder, self.token, self.ttl_ms]
        )
        if not reply:
            return False
        self.epoch, self._value = int(reply[0]), text(reply[1])
        self._trust_from(sent)
        return True

    def renew(self) -> bool:
        """Extend our lease; on any doubt (not ours, Redis error) stop trusting it at once."""
        self.failure = None
        if not self._value:
            return False
        if not self.is_held():
            # Too late: someone may already lead. Never extend it; give it up for good.
            self._lose("it expired before it was renewed")
            self.release()
            return False
        sent = time.monotonic()
        try:
            ok = int(self._script(RENEW, keys.lease_key(), args=[self._value, self.ttl_ms]))
            reason = "another holder has it"
        except REDIS_ERRORS as exc:
            ok, reason, self.failure = 0, f"Redis did not answer ({exc})", exc
        if ok:
            self._trust_from(sent)
            signals.lease_renewed.send(Lease, holder=self.holder, epoch=self.epoch)
            return True
        self._lose(reason)
        self._value = ""
        return False

    def _lose(self, reason: str) -> None:
        logger.warning(
            "%s lost the orchestrator lease (epoch %s): %s",
            self.holder,
            self.epoch,
            reason,
            extra={"action": "lease_lost"},
        )
        self._valid_until = 0.0

    def raise_epoch(self, minimum: int) -> int:
        """Move the epoch past ``minimum`` (the database saw a higher one) and adopt it.

        The lease's value carries the new epoch too; 0 when the lease is no longer ours.
        """
        reply = self._script(
            RAISE_EPOCH,
            keys.lease_key(),
            keys.epoch_key(),
            args=[self._value, minimum, self.ttl_ms],
        )
        if not reply:
            return 0
        self.epoch, self._value = int(reply[0]), text(reply[1])
        return self.epoch

    def verify(self) -> bool:
        """Whether Redis still holds our value: checked before acting, not only on renewal.

        The lease can vanish without a rival (a Redis flush or restart); until the next
        renewal the holder would otherwise keep acting on a lease nobody sees. Any
        doubt, a Redis error included, is a no.
        """
        if not self.is_held():
            return False
        try:
            current = text(self._client().get(keys.lease_key()))
        except REDIS_ERRORS:
            return False
        return current == self._value

    def _client(self):
        return self.client if self.client is not None else get_redis()

    def release(self) -> None:
        """Give the lease up (compare-and-delete), so a follower takes over within its poll."""
        if not self._value:
            return
        try:
            self._script(RELEASE, keys.lease_key(), args=[self._value])
        except REDIS_ERRORS as exc:
            logger.warning("Lease release failed (it expires by itself): %s", exc)
        self._value, self._valid_until = "", 0.0
