"""Real hosts for multi-node tests: a cloud, a WAN and edge node pools in network namespaces.

Node-pool behaviour (one cache per pool, no byte crossing the WAN twice, pools never using each
other's caches) can only be shown with several hosts that have their own addresses, a LAN between
them and a slow link to the cloud. :class:`Lab` builds that on one Linux machine out of network
namespaces, veths and bridges, and tears it all down again::

    cloud ns                 wan ns                          edge ns (router)          host ns
    [S3 origin]              tun0 <-> wanlink relay           br0 192.0.2.1/26 ---+--- pool-a-0 .11
    wan0 198.51.100.10/24 -- cloud0 198.51.100.1/24           (pool-a LAN)        +--- pool-a-1 .12
                             [tc tbf, rtt/2 delay each way]                       +--- pool-a-2 .13
                             edge0 192.0.2.193/30 ------------ wan0 192.0.2.194   br1 192.0.2.65/26
                                                                                  +--- pool-b-0 .75
                                                                                  +--- pool-b-1 .76

* Every packet between the edge and the cloud crosses the ``wan`` namespace, whose policy routing
  sends it through a TUN device to :mod:`tidepool_lab.testbed.wanlink` (user-space delay, byte
  counters, link cut: this kernel has no ``netem``); ``tc tbf`` on the two egress veths of that
  namespace limits the bandwidth each way.
* Each pool is one unshaped LAN: a Linux bridge in the ``edge`` router namespace with one veth per
  host. Pool *k* gets ``192.0.2.(64k)/26`` (gateway ``.64k+1``, hosts from ``.64k+11``). The router
  refuses to forward between pools (``ip rule ... prohibit``, so a connect fails at once with
  ``EHOSTUNREACH``) until :meth:`Lab.connect_pools` allows it.
* The origin is the ``juicefs`` S3 gateway (as in :mod:`tidepool_lab.testbed.s3server`, same flags)
  listening on ``198.51.100.10:9000`` in the ``cloud`` namespace. The test process talks to it (and
  to any host) from threads that joined the namespace with ``setns(2)``: a socket keeps the
  namespace it was created in, so no address is ever added to the root namespace.

Every interface is created directly inside its namespace, so nothing appears in the root
namespace and deleting the namespaces removes every veth and bridge. Namespaces are named
``<prefix>-<pid>-<n>-<role>``; :func:`cleanup_stale` removes those of a test run that died
(its PID is gone), after killing the processes still inside them.

Limits: needs root (``CAP_NET_ADMIN`` and ``CAP_SYS_ADMIN``), ``iproute2`` (``ip``, ``tc``),
``/dev/net/tun`` and the ``tbf`` qdisc; IPv4 only (IPv6 is disabled in every namespace); at most
three pools of at most 50 hosts; namespaces share the file system, so hosts see the same files.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import ipaddress
import itertools
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from tidepool_lab.testbed import log_tail, s3util, stop_process_group
from tidepool_lab.testbed.s3server import _format_juicefs, find_binary
from tidepool_lab.testbed.wanlink import CutMode, TunRelayStats, WanLink
from tidepool_lab.testbed.workerproc import WorkerProcess

__all__ = [
    "CLOUD_NET",
    "EDGE_NET",
    "Host",
    "Lab",
    "LabError",
    "Origin",
    "Wan",
    "call_in_netns",
    "cleanup_stale",
    "netns_available",
    "netns_executor",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

CLOUD_NET = ipaddress.IPv4Network("198.51.100.0/24")
"""The cloud side of the WAN (TEST-NET-2)."""
EDGE_NET = ipaddress.IPv4Network("192.0.2.0/24")
"""The edge side: pool LANs and the router-WAN transit link (TEST-NET-1)."""

_CLOUD_GW = "198.51.100.1"
_ORIGIN_ADDR = "198.51.100.10"
_ORIGIN_PORT = 9000
_TRANSIT_WAN = "192.0.2.193"
_TRANSIT_RTR = "192.0.2.194"
_MAX_POOLS = 3
_MAX_HOSTS = 50
_HOST_OFFSET = 11
_WAN_TABLE = "100"
_CLONE_NEWNET = 0x40000000
_READY = re.compile(r"serving .* on (https?://\S+)")  # the line `tidepool up` logs when ready
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
_seq = itertools.count(1)
_libc = ctypes.CDLL(None, use_errno=True)


class LabError(RuntimeError):
    """A lab could not be built or a command in it failed; the message carries the output."""


# --------------------------------------------------------------------------------------------
# Namespaces from Python


def netns_available() -> str | None:
    """``None`` if labs can be built here, else the precise reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN); euid is not 0"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found: install Debian package iproute2"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing: the WAN relay needs the tun driver"
    name = f"tpprobe-{os.getpid()}"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns add` failed: {probe.stderr.strip()}"
    try:
        shape = ["rate", "1mbit", "burst", "16kb", "latency", "10ms"]
        tbf = subprocess.run(
            ["tc", "-n", name, "qdisc", "add", "dev", "lo", "root", "tbf", *shape],
            capture_output=True,
            text=True,
        )
        if tbf.returncode != 0:
            return f"`tc qdisc add ... tbf` failed in a namespace: {tbf.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _enter_netns(netns: str) -> None:
    """Move the calling thread (only) into network namespace ``netns``."""
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def call_in_netns(netns: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` in a fresh thread inside ``netns``; return or raise its outcome.

    Sockets ``fn`` creates stay in ``netns`` after it returns, so a socket connected (or
    listening) here may be used from any thread of the caller.
    """
    outcome: list[Any] = []

    def run() -> None:
        try:
            _enter_netns(netns)
            outcome.append((True, fn(*args, **kwargs)))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def netns_executor(netns: str, max_workers: int = 4) -> concurrent.futures.ThreadPoolExecutor:
    """A thread pool whose threads all live in ``netns`` (for concurrent clients, uploads)."""
    return concurrent.futures.ThreadPoolExecutor(
        max_workers=max_workers,
        thread_name_prefix=f"netns-{netns}",
        initializer=_enter_netns,
        initargs=(netns,),
    )


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> str:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def _ip(netns: str, *args: str, check: bool = True) -> str:
    """``ip -n NETNS ARGS...``."""
    return _run(["ip", "-n", netns, *args], check=check)


def _child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE" and k.lower() not in _PROXY_VARS
    }
    env.update(extra or {})
    return env


def _netns_pids(netns: str) -> list[int]:
    out = _run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def _kill_netns_pids(netns: str) -> None:
    """SIGKILL what still runs in ``netns``: only processes our lab started can be in it."""
    for pid in _netns_pids(netns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _delete_netns(names: Iterable[str]) -> None:
    names = list(names)
    for name in names:
        _kill_netns_pids(name)
    for name in names:
        _run(["ip", "netns", "del", name], check=False)


def cleanup_stale(prefix: str) -> list[str]:
    """Delete namespaces ``<prefix>-<pid>-<n>-*`` whose creating process is gone; return them.

    Processes still inside them (left by a crashed run) are killed first, by PID.
    """
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)-\d+-")
    stale = []
    for line in _run(["ip", "netns", "list"], check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        m = pattern.match(name)
        if not m:
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            stale.append(name)
        except PermissionError:
            pass  # that PID is alive (and not ours to judge)
    if stale:
        log.warning("removing namespaces left by a crashed run: %s", ", ".join(stale))
        _delete_netns(stale)
    return stale


# --------------------------------------------------------------------------------------------
# Lab parts


@dataclass
class Host:
    """An edge host: one network namespace with one address on its pool's LAN."""

    lab: Lab = field(repr=False)
    name: str
    """The namespace name (``ip netns exec NAME ...``)."""
    pool: str
    index: int
    address: str
    """Its IPv4 address on the pool LAN."""

    @property
    def node(self) -> str:
        """A node name for Tidepool (``<pool>-<index>``)."""
        return f"{self.pool}-{self.index}"

    def exec(self, argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in this host; the lab tracks it and kills its group at teardown.

        Defaults: own session (process group), ``env`` without ``AWS_CA_BUNDLE``/proxies.
        """
        return self.lab._exec(self.name, argv, **popen)

    def run(
        self, argv: Sequence[str], *, timeout: float = 60.0, **popen: Any
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` in this host to completion, capturing its output."""
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("stderr", subprocess.PIPE)
        proc = self.exec(argv, **popen)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process_group(proc)
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` in a thread inside this host; see :func:`call_in_netns`."""
        return call_in_netns(self.name, fn, *args, **kwargs)

    def start_worker(
        self,
        spec_files: Sequence[Path],
        log_path: Path,
        *,
        token: str,
        port: int = 8433,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        peer_token: str | None = None,
    ) -> WorkerProcess:
        """Run ``tidepool up`` on this host's address; return once it serves.

        The token travels in ``TIDEPOOL_TOKEN`` (a worker off loopback requires one) and the
        pool's peer credential in ``TIDEPOOL_PEER_TOKEN`` (a pool member requires one), never on
        the command line.
        """
        secrets = {"TIDEPOOL_TOKEN": token}
        if peer_token is not None:
            secrets["TIDEPOOL_PEER_TOKEN"] = peer_token
        argv = [sys.executable, "-m", "tidepool.cli", "up", "--host", self.address]
        argv += ["--port", str(port)]
        for spec in spec_files:
            argv += ["-f", str(spec)]
        argv += list(extra_args)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = log_path.stat().st_size if log_path.exists() else 0  # a log may be reused
        with open(log_path, "ab") as log_file:
            proc = self.exec(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=_child_env({**secrets, **(env or {})}),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(log_path, "rb") as logf:
                logf.seek(offset)
                m = _READY.search(logf.read().decode(errors="replace"))
            if m:
                return WorkerProcess(proc, m.group(1), log_path)
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        stop_process_group(proc)
        raise LabError(
            f"tidepool worker on {self.name} ({self.address}:{port}) did not start "
            f"(exit code {proc.poll()}); log tail:\n{log_tail(log_path)}"
        )


@dataclass
class Origin:
    """The S3 origin in the cloud namespace: what the edge connects to, and how to fill it."""

    lab: Lab = field(repr=False)
    netns: str
    address: str
    port: int
    access_key: str
    secret_key: str = field(repr=False)
    log_path: Path

    @property
    def endpoint(self) -> str:
        """``http://198.51.100.10:9000``: reachable from edge hosts through the WAN only."""
        return f"http://{self.address}:{self.port}"

    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options for this origin (contains the secret)."""
        return s3util.storage_options(self.endpoint, self.access_key, self.secret_key)

    def boto3_client(self, max_pool_connections: int = 10) -> Any:
        """A boto3 client; use it only from threads inside a namespace (:meth:`call`)."""
        return s3util.boto3_client(
            self.endpoint, self.access_key, self.secret_key, max_pool_connections
        )

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` in a thread inside the cloud namespace (next to the origin: no WAN)."""
        return call_in_netns(self.netns, fn, *args, **kwargs)

    def _ss(self, address: str, *flags: str) -> str:
        """``ss`` in the cloud namespace over its TCP connections to edge host ``address``
        (time-wait ones left out: they send nothing)."""
        argv = ["ip", "netns", "exec", self.netns, "ss", "-tnH", *flags, "state", "all"]
        argv += ["exclude", "time-wait", "exclude", "listening", "dst", address]
        return _run(argv, check=not flags).strip()

    def connections_to(self, address: str) -> str:
        """The cloud side's TCP connections to edge host ``address`` (``ss`` lines)."""
        return self._ss(address)

    def reset_connections(self, address: str, timeout: float = 30.0) -> None:
        """Destroy the origin's connections to edge host ``address`` (``ss -K`` in the cloud
        namespace) and make sure none is left; call it once that host's workers are stopped.

        A worker killed, or one that gave up on a connection, while the cable was pulled leaves
        the origin holding a connection with data the edge never acknowledged. The origin
        resends it with exponential backoff until the host answers with a reset, which happens
        only once the link is back: seconds later, one full segment per connection, inside
        whatever the next test counts as WAN bytes (the pool test's "0 bytes on node B"
        failed that way under load: 2 and 3 segments of 1,448 bytes)."""
        deadline = time.monotonic() + timeout
        while True:
            self._ss(address, "-K")  # not checked: a kernel without SOCK_DESTROY refuses it
            left = self.connections_to(address)
            if not left:
                return
            if time.monotonic() > deadline:
                raise LabError(f"the origin still holds connections to {address}:\n{left}")
            time.sleep(0.1)  # a kernel without SOCK_DESTROY: they end at the next resend

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` if it does not exist; return ``name``."""
        client = self.boto3_client()

        def create() -> None:
            exists = (
                client.exceptions.BucketAlreadyOwnedByYou,
                client.exceptions.BucketAlreadyExists,
            )
            with contextlib.suppress(*exists):
                client.create_bucket(Bucket=name)

        self.call(create)
        return name

    def upload(
        self,
        bucket: str,
        objects: Mapping[str, bytes] | Iterable[tuple[str, bytes]],
        *,
        workers: int = 8,
    ) -> int:
        """Put ``objects`` (key -> bytes) into ``bucket`` from the cloud namespace; return bytes."""
        items = list(objects.items() if isinstance(objects, Mapping) else objects)
        client = self.boto3_client(max_pool_connections=workers)

        def put(item: tuple[str, bytes]) -> int:
            client.put_object(Bucket=bucket, Key=item[0], Body=item[1])
            return len(item[1])

        with netns_executor(self.netns, workers) as pool:
            return sum(pool.map(put, items))


class Wan:
    """The WAN between cloud and edge: the user-space delay relay plus ``tc tbf`` each way."""

    def __init__(self, netns: str, link: WanLink, rtt_ms: float, rate_mbit: float) -> None:
        self.netns = netns
        self.link = link
        self.rtt_ms = rtt_ms
        self.rate_mbit = rate_mbit

    def stats(self) -> TunRelayStats:
        """Bytes and packets that crossed the WAN each way (``up`` = edge -> cloud), link state."""
        return self.link.stats()

    def new_bytes_down(self) -> int:
        """Payload that crossed towards the edge, TCP's resends of bytes already delivered left
        out (a tail-loss probe may resend the end of a transfer after the reader had it all)."""
        stats = self.link.stats()
        return int(stats["payload_down"] - stats["resent_down"])

    def set_link(self, up: bool, mode: CutMode = "reset") -> None:
        """Cut or restore the link (``mode="drop"``: a silent black hole instead of resets)."""
        self.link.set_link(up, mode)

    def set_shape(self, rtt_ms: float | None = None, rate_mbit: float | None = None) -> None:
        """Change the delay (relay) and/or the rate (``tc tbf``) of both directions."""
        if rtt_ms is not None:
            self.link.set_delay(rtt_ms)
            self.rtt_ms = rtt_ms
        if rate_mbit is not None:
            for dev in ("cloud0", "edge0"):
                _run(["tc", "-n", self.netns, "qdisc", "del", "dev", dev, "root"], check=False)
                if rate_mbit > 0:
                    _run(_tbf(self.netns, dev, rate_mbit, self.rtt_ms))
            self.rate_mbit = rate_mbit

    def qdisc_stats(self) -> str:
        """``tc -s qdisc`` of the WAN namespace (sent bytes, drops, overlimits), for diagnosis."""
        return _run(["tc", "-n", self.netns, "-s", "qdisc", "show"])


def _tbf(netns: str, dev: str, rate_mbit: float, rtt_ms: float) -> list[str]:
    rate_bytes = rate_mbit * 1e6 / 8
    burst = max(16 * 1024, int(rate_bytes * 0.004))  # >= one 250 Hz tick of data
    # A router buffer of about two BDPs: with one, slow-start overshoot drops packets and a
    # single CUBIC flow measured 60-85 % of the rate here; with two, 80-95 %.
    latency = 2 * max(20.0, rtt_ms)
    shape = ["rate", f"{rate_mbit}mbit", "burst", str(burst), "latency", f"{latency}ms"]
    return ["tc", "-n", netns, "qdisc", "add", "dev", dev, "root", "tbf", *shape]


# --------------------------------------------------------------------------------------------
# The lab


class Lab:
    """A cloud, a WAN and edge pools in network namespaces; see the module docstring.

    Build it with :meth:`create` and end it with :meth:`close` (or use it as a context manager);
    :meth:`close` is safe to call at any point, also after a partly failed :meth:`create`.
    """

    def __init__(self, prefix: str, workdir: Path, owned_workdir: bool) -> None:
        self.id = f"{prefix}-{os.getpid()}-{next(_seq)}"
        """Common start of every namespace name of this lab."""
        self.workdir = workdir
        self._owned_workdir = owned_workdir
        self.namespaces: list[str] = []
        """Every namespace this lab created, in creation order."""
        self.cloud_ns = f"{self.id}-cloud"
        self.wan_ns = f"{self.id}-wan"
        self.edge_ns = f"{self.id}-edge"
        self.hosts: dict[str, list[Host]] = {}
        """Edge hosts by pool name."""
        self.pool_nets: dict[str, ipaddress.IPv4Network] = {}
        self._origin: Origin | None = None
        self._wan: Wan | None = None
        self._processes: list[subprocess.Popen[Any]] = []
        self._lock = threading.Lock()
        self._closed = False

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        prefix: str = "tp",
        pools: Mapping[str, int] | None = None,
        *,
        rtt_ms: float = 40.0,
        rate_mbit: float = 100.0,
        origin: bool = True,
        access_key: str = "tidepool",
        secret_key: str = "tidepool-netns-secret",
        workdir: Path | None = None,
    ) -> Lab:
        """Build the whole lab; on any failure tear down what was built and raise.

        ``pools`` maps pool name -> number of hosts (default ``{"pool-a": 3, "pool-b": 2}``);
        ``rate_mbit <= 0`` leaves the WAN unshaped; ``origin=False`` skips the S3 server.
        """
        pools = dict(pools or {"pool-a": 3, "pool-b": 2})
        if not 1 <= len(pools) <= _MAX_POOLS:
            raise ValueError(f"pools must name 1 to {_MAX_POOLS} pools, got {len(pools)}")
        for pool, count in pools.items():
            if not 1 <= count <= _MAX_HOSTS:
                raise ValueError(f"pool {pool!r} must have 1 to {_MAX_HOSTS} hosts, got {count}")
        if rtt_ms < 0:
            raise ValueError(f"rtt_ms must be >= 0, got {rtt_ms}")
        if not re.fullmatch(r"[a-z][a-z0-9]{0,7}", prefix):
            raise ValueError(f"prefix {prefix!r} must be 1-8 lowercase letters/digits")
        reason = netns_available()
        if reason is not None:
            raise LabError(reason)
        owned = workdir is None
        workdir = Path(tempfile.mkdtemp(prefix="tidepool-lab-")) if workdir is None else workdir
        lab = cls(prefix, workdir, owned)
        try:
            lab._build(pools, rtt_ms, rate_mbit)
            if origin:
                lab._start_origin(access_key, secret_key)
        except BaseException:
            lab.close()
            raise
        log.info("lab %s ready: %s", lab.id, lab.describe())
        return lab

    def _add_ns(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        _ip(name, "link", "set", "lo", "up")
        # No IPv6 chatter (DAD, router solicitations) through the relay.
        self._sysctl(
            name, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"
        )

    def _veth(self, ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
        _ip(ns_a, "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b)

    @staticmethod
    def _sysctl(ns: str, *settings: str) -> None:
        """Set ``key=value`` sysctls of ``ns`` (``/proc/sys/net`` is that of the writing thread)."""

        def write() -> None:
            for setting in settings:
                key, value = setting.split("=", 1)
                Path("/proc/sys", *key.split(".")).write_text(value)

        call_in_netns(ns, write)

    def _build(self, pools: Mapping[str, int], rtt_ms: float, rate_mbit: float) -> None:
        cloud, wan, edge = self.cloud_ns, self.wan_ns, self.edge_ns
        for ns in (cloud, wan, edge):
            self._add_ns(ns)
        self._sysctl(wan, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0")
        self._sysctl(wan, "net.ipv4.conf.default.rp_filter=0")
        self._sysctl(edge, "net.ipv4.ip_forward=1")

        # cloud <-> wan
        self._veth(cloud, "wan0", wan, "cloud0")
        _ip(cloud, "addr", "add", f"{_ORIGIN_ADDR}/24", "dev", "wan0")
        _ip(cloud, "link", "set", "wan0", "up")
        _ip(cloud, "route", "add", "default", "via", _CLOUD_GW)
        _ip(wan, "addr", "add", f"{_CLOUD_GW}/24", "dev", "cloud0")
        _ip(wan, "link", "set", "cloud0", "up")

        # wan <-> edge router
        self._veth(wan, "edge0", edge, "wan0")
        _ip(wan, "addr", "add", f"{_TRANSIT_WAN}/30", "dev", "edge0")
        _ip(wan, "link", "set", "edge0", "up")
        _ip(wan, "route", "add", str(EDGE_NET), "via", _TRANSIT_RTR)
        _ip(edge, "addr", "add", f"{_TRANSIT_RTR}/30", "dev", "wan0")
        _ip(edge, "link", "set", "wan0", "up")
        _ip(edge, "route", "add", "default", "via", _TRANSIT_WAN)

        # The delay: everything the wan namespace forwards goes through tun0 and the relay;
        # what the relay writes back enters from tun0 and takes the main table.
        link = WanLink.start(wan, str(CLOUD_NET), self.workdir / "wan", rtt_ms=rtt_ms)
        self._processes.append(link._process)
        self._wan = Wan(wan, link, rtt_ms, rate_mbit)
        self._sysctl(wan, "net.ipv4.conf.tun0.rp_filter=0")
        _ip(wan, "link", "set", "tun0", "up")
        _ip(wan, "route", "add", "default", "dev", "tun0", "table", _WAN_TABLE)
        for pref, dev in ((100, "edge0"), (101, "cloud0")):
            _ip(wan, "rule", "add", "pref", str(pref), "iif", dev, "lookup", _WAN_TABLE)
        if rate_mbit > 0:
            for dev in ("cloud0", "edge0"):
                _run(_tbf(wan, dev, rate_mbit, rtt_ms))

        # pools: a bridge per pool in the router namespace, a veth per host
        for k, (pool, count) in enumerate(pools.items()):
            net = ipaddress.IPv4Network(f"192.0.2.{64 * k}/26")
            self.pool_nets[pool] = net
            bridge, gateway = f"br{k}", str(net.network_address + 1)
            _ip(edge, "link", "add", bridge, "type", "bridge")
            _ip(edge, "addr", "add", f"{gateway}/26", "dev", bridge)
            _ip(edge, "link", "set", bridge, "up")
            hosts = []
            for i in range(count):
                ns = f"{self.id}-{pool}-{i}"
                address = str(net.network_address + _HOST_OFFSET + i)
                self._add_ns(ns)
                port = f"p{k}h{i}"
                self._veth(ns, "eth0", edge, port)
                _ip(edge, "link", "set", port, "master", bridge, "up")
                _ip(ns, "addr", "add", f"{address}/26", "dev", "eth0")
                _ip(ns, "link", "set", "eth0", "up")
                _ip(ns, "route", "add", "default", "via", gateway)
                hosts.append(Host(self, ns, pool, i, address))
            self.hosts[pool] = hosts
        self.connect_pools(False)

    def _start_origin(self, access_key: str, secret_key: str) -> None:
        workdir = self.workdir / "origin"
        workdir.mkdir(parents=True, exist_ok=True)
        binary = find_binary("juicefs")
        _format_juicefs(binary, workdir)  # local files only: no network involved
        log_path = workdir / "juicefs-s3.log"
        cmd = [
            str(binary),
            "gateway",
            "--no-agent",
            "--no-color",
            f"sqlite3://{workdir / 'meta.db'}",
            f"{_ORIGIN_ADDR}:{_ORIGIN_PORT}",
            "--multi-buckets",
            "--keep-etag",
            "--no-usage-report",
            "--no-banner",
            "--backup-meta",
            "0",
            "--cache-dir",
            str(workdir / "jfs-cache"),
            "--cache-size",
            "0",
            "--buffer-size",
            "128",
            "--metrics",
            "127.0.0.1:9567",  # the cloud namespace's own loopback
        ]
        env = _child_env({"MINIO_ROOT_USER": access_key, "MINIO_ROOT_PASSWORD": secret_key})
        with open(log_path, "ab") as log_file:
            self._exec(
                self.cloud_ns, cmd, cwd=workdir, stdout=log_file, stderr=subprocess.STDOUT, env=env
            )
        origin = Origin(
            self, self.cloud_ns, _ORIGIN_ADDR, _ORIGIN_PORT, access_key, secret_key, log_path
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        def probe() -> bool:
            try:
                with opener.open(origin.endpoint + "/minio/health/live", timeout=1.0) as reply:
                    reply.read()
                return True
            except urllib.error.HTTPError:
                return True  # any HTTP answer means it serves
            except OSError:
                return False

        deadline = time.monotonic() + 30.0
        while not call_in_netns(self.cloud_ns, probe):
            if time.monotonic() > deadline:
                raise LabError(
                    f"S3 origin did not answer on {origin.endpoint} in {self.cloud_ns} within "
                    f"30 s; log tail:\n{log_tail(log_path)}"
                )
            time.sleep(0.1)
        self._origin = origin

    # -- use -------------------------------------------------------------------------------------

    @property
    def origin(self) -> Origin:
        """The S3 origin (raises if the lab was created with ``origin=False``)."""
        if self._origin is None:
            raise LabError(f"lab {self.id} has no origin (created with origin=False)")
        return self._origin

    @property
    def wan(self) -> Wan:
        assert self._wan is not None, "lab not built"
        return self._wan

    def all_hosts(self) -> list[Host]:
        return [h for hosts in self.hosts.values() for h in hosts]

    def connect_pools(self, allowed: bool) -> None:
        """Let the edge router forward between pools (``True``) or refuse it (``False``)."""
        pools = list(self.pool_nets.values())
        for k, net in enumerate(pools):
            for other in pools:
                if other is net:
                    continue
                rule = ["pref", "50", "iif", f"br{k}", "to", str(other), "prohibit"]
                _ip(self.edge_ns, "rule", "del", *rule, check=False)
                if not allowed:
                    _ip(self.edge_ns, "rule", "add", *rule)

    def _exec(self, netns: str, argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
        popen.setdefault("start_new_session", True)
        popen.setdefault("stdin", subprocess.DEVNULL)
        popen.setdefault("env", _child_env())
        with self._lock:
            if self._closed:
                raise LabError(f"lab {self.id} is closed")
            # ``ip netns exec`` execs ``argv``, so the Popen's PID is the program's own.
            proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv], **popen)
            self._processes.append(proc)
        return proc

    def describe(self) -> str:
        pools = "; ".join(
            f"{pool} {self.pool_nets[pool]}: " + ", ".join(f"{h.node}={h.address}" for h in hosts)
            for pool, hosts in self.hosts.items()
        )
        wan = (
            f"WAN {self._wan.rtt_ms:g} ms RTT, {self._wan.rate_mbit:g} Mbit/s" if self._wan else ""
        )
        origin = f"origin {self._origin.endpoint}" if self._origin else "no origin"
        return f"{origin}; {wan}; {pools}"

    # -- teardown --------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process, then delete every namespace (and with them every link)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self._wan is not None:
                self._wan.link.stop(timeout=2.0)
            for proc in reversed(self._processes):
                stop_process_group(proc, timeout=3.0)
        finally:
            _delete_netns(reversed(self.namespaces))
            if self._owned_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
        log.info("lab %s closed", self.id)

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Lab({self.id!r}, {'closed' if self._closed else 'open'})"
