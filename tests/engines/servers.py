"""Private Redis servers for the engine tests: a Redis Cluster and a Sentinel group.

Every server is a ``redis-server`` child of the test process, with no persistence,
in a temporary directory, on ports found free at start. ``stop()`` kills exactly
those children (SIGKILL by PID) and removes the directory. Nothing here waits by
sleeping: each step polls the servers with a deadline and fails naming the step.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support import poll_until

HOST = "127.0.0.1"


def free_ports(count: int, *, start: int = 7100, stride: int = 0) -> list[int]:
    """``count`` consecutive free ports from ``start`` on (and ``port + stride`` free too:
    a cluster node also listens on its bus port, port + 10000)."""

    def free(port: int) -> bool:
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                return False
        return True

    base = start
    while base < start + 2000:
        ports = range(base, base + count)
        if all(free(p) and (not stride or free(p + stride)) for p in ports):
            return list(ports)
        base += count
    raise AssertionError(f"no {count} free ports from {start} on: stop what holds them")


@dataclass
class Servers:
    """The ``redis-server`` processes of one fixture, by port."""

    name: str
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dt-engine-")))
    procs: dict[int, subprocess.Popen] = field(default_factory=dict)

    def start(self, port: int, *args: str, conf: str | None = None) -> subprocess.Popen:
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError("redis-server is not installed: apt-get install redis-server")
        workdir = self.dir / str(port)
        workdir.mkdir(exist_ok=True)
        argv = [binary]
        if conf is not None:  # Sentinel rewrites its config file, so it needs one
            (workdir / "redis.conf").write_text(conf)
            argv.append(str(workdir / "redis.conf"))
        argv += ["--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(workdir), *args]
        log = open(workdir / "log", "ab")  # noqa: SIM115 - the child keeps it
        self.procs[port] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        poll_until(lambda: self.answers(port), timeout=10, message=f"{self.name} :{port} to start")
        return self.procs[port]

    def answers(self, port: int) -> bool:
        proc = self.procs[port]
        if proc.poll() is not None:
            why = f"exited with {proc.returncode}:\n{self.log(port)}"
            raise AssertionError(f"{self.name} :{port} {why}")
        with contextlib.suppress(redis.RedisError):
            return bool(redis.Redis(HOST, port, socket_timeout=1).ping())
        return False

    def kill(self, port: int) -> None:
        """SIGKILL one server, as a host crash would."""
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def log(self, port: int) -> str:
        path = self.dir / str(port) / "log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_cluster(masters: int = 3, replicas: int = 1) -> tuple[Servers, list[int]]:
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each; its ports."""
    servers = Servers("Redis Cluster")
    ports = free_ports(masters * (1 + replicas), start=7100, stride=10000)
    try:
        for port in ports:
            servers.start(
                port, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "1000",
            )  # fmt: skip
        create = [shutil.which("redis-cli") or "redis-cli", "--cluster", "create"]
        create += [f"{HOST}:{p}" for p in ports]
        create += ["--cluster-replicas", str(replicas), "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode:
            raise AssertionError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
        poll_until(
            lambda: all(cluster_ok(p) for p in ports), timeout=30, message="cluster_state:ok"
        )
    except BaseException:
        servers.stop()
        raise
    return servers, ports


def cluster_ok(port: int) -> bool:
    info = redis.Redis(HOST, port, decode_responses=True).cluster("info")
    return info.get("cluster_state") == "ok"


def master_ports(port: int) -> list[int]:
    """The ports of the cluster's masters, as the node on ``port`` sees them."""
    nodes = redis.Redis(HOST, port, decode_responses=True).cluster("nodes")
    return sorted(
        int(addr.split(":")[1].split("@")[0])
        for addr, info in nodes.items()
        if "master" in info["flags"] and "fail" not in info["flags"]
    )


SENTINEL_CONF = """sentinel monitor {service} {host} {master} 2
sentinel down-after-milliseconds {service} 1000
sentinel failover-timeout {service} 10000
sentinel parallel-syncs {service} 1
"""


def sentinel_group(service: str = "mymaster") -> tuple[Servers, int, list[int]]:
    """One master, one replica and three Sentinels (quorum 2) watching them as ``service``.

    Returns the servers, the master's port and the Sentinels' ports.
    """
    group = Servers("Redis Sentinel")
    master, replica, *sentinels = free_ports(5, start=7300)
    try:
        group.start(master)
        group.start(replica, "--replicaof", HOST, str(master))
        conf = SENTINEL_CONF.format(service=service, host=HOST, master=master)
        for port in sentinels:
            group.start(port, "--sentinel", conf=conf)
        poll_until(
            lambda: all(sentinel_sees(p, service, replicas=1, sentinels=2) for p in sentinels),
            timeout=30,
            message="every Sentinel to see the replica and the other Sentinels",
        )
    except BaseException:
        group.stop()
        raise
    return group, master, sentinels


def sentinel_sees(port: int, service: str, *, replicas: int, sentinels: int) -> bool:
    info = redis.Redis(HOST, port, decode_responses=True).sentinel_master(service)
    return info["num-slaves"] >= replicas and info["num-other-sentinels"] >= sentinels


def sentinel_master(port: int, service: str = "mymaster") -> int:
    """The master's port, as the Sentinel on ``port`` names it."""
    host_port = redis.Redis(HOST, port).sentinel_get_master_addr_by_name(service)
    return int(host_port[1])
