"""Redis URLs (README, "Scaling out") to redis-py clients: one server, Cluster or Sentinel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote

from .._util import redact_url

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    AnyRedis = Redis | RedisCluster

__all__ = ["SCHEMES", "SCHEMES_TEXT", "Connection", "connect", "describe", "split_hosts"]

SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "redis+sentinel")
SCHEMES_TEXT = "redis://, rediss://, unix://, redis+cluster:// or redis+sentinel://"


class Connection(NamedTuple):
    """A client, a Sentinel's own clients, and the calls allowed in flight (None: pool waits)."""

    client: AnyRedis
    also_close: list[Any]
    gate: int | None


def connect(url: str, pool_size: int, timeout: float) -> Connection:
    """A client for ``url`` (``pool_size`` connections, ``timeout`` everywhere); ValueError,
    never showing the password, for a URL of no known form."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"url must be a non-empty URL of the forms: {SCHEMES_TEXT}")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ValueError(f"url must start with {SCHEMES_TEXT} (got {redact_url(url)!r})")
    try:
        if scheme == "redis+cluster":
            return _cluster(url, pool_size, timeout)
        if scheme == "redis+sentinel":
            return _sentinel(url, pool_size, timeout)
        import redis.asyncio

        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=pool_size, timeout=timeout, **_client_options(timeout)
        )
        return Connection(redis.asyncio.Redis.from_pool(pool), [], None)
    except ValueError as exc:
        reason = str(exc) if scheme in ("redis+cluster", "redis+sentinel") else "bad form"
        raise ValueError(f"url is not a valid Redis URL ({reason}): {redact_url(url)}") from None


def describe(client: AnyRedis) -> str:
    """Where a given client connects, as a URL without credentials."""
    nodes = getattr(getattr(client, "nodes_manager", None), "startup_nodes", None)
    if nodes:  # a RedisCluster
        return "redis+cluster://" + ",".join(sorted(nodes))
    kw = client.get_connection_kwargs()
    if kw.get("path"):
        return f"unix://{kw['path']}?db={kw.get('db', 0)}"
    return f"redis://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def split_hosts(
    url: str, default_port: int
) -> tuple[str | None, str | None, list[tuple[str, int]], str]:
    """User, password (percent-decoded), hosts and path (no leading ``/``) of
    ``scheme://[[user]:password@]host[:port][,host[:port]...][/path]``; ValueError if bad."""
    rest = url.split("://", 1)[1]
    netloc, _, path = rest.partition("/")
    if "?" in netloc or "?" in path or "#" in rest:
        raise ValueError("query strings and fragments are not supported in this URL form")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:  # as redis-py reads redis://user:password@host
        user, sep, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if sep else None
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        if item.startswith("["):
            host, _, tail = item[1:].partition("]")
            port_text = tail[1:] if tail.startswith(":") else ""
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise ValueError("every host needs a name")
        port = int(port_text) if port_text else default_port
        if not 0 < port < 65536:
            raise ValueError("port out of range")
        hosts.append((host, port))
    return username, password, hosts, path


def _client_options(timeout: float) -> dict[str, Any]:
    # No retries: the store retries within its deadline.
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": False,
    }


def _cluster(url: str, pool_size: int, timeout: float) -> Connection:
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    username, password, hosts, path = split_hosts(url, 6379)
    if path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0")
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in hosts],
        username=username,
        password=password,
        max_connections=pool_size,
        **_client_options(timeout),
    )
    return Connection(client, [], pool_size)


def _sentinel(url: str, pool_size: int, timeout: float) -> Connection:
    from redis.asyncio.sentinel import Sentinel

    username, password, hosts, path = split_hosts(url, 26379)
    service, _, db_text = path.strip("/").partition("/")
    if not service or "/" in db_text:
        raise ValueError("the path must be /service_name or /service_name/db")
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        hosts,
        sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
        username=username,
        password=password,
        db=int(db_text) if db_text else 0,
        **_client_options(timeout),
    )
    client = sentinel.master_for(service, max_connections=pool_size)
    return Connection(client, list(sentinel.sentinels), pool_size)
