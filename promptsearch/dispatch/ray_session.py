"""The one Ray adapter's entry: a Ray session for one job run, local (everything under the
workspace, loopback only) or on a cluster, with the process's Ray settings restored after it.

    python -c "from promptsearch.dispatch.ray_session import ray_session; help(ray_session)"

A local Ray is a single-machine Ray: its node address is 127.0.0.1, so the GCS, the raylet, the
object manager, the runtime-env agent and every worker listen on the loopback interface only
(Ray otherwise binds every interface). Joining a cluster (``ray_address``) is the explicit opt-in
to the network. Ray makes its session folders world-writable (0777, for shared machines); a
local session's are made the user's alone (0700) as soon as they exist, and again at its end.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from ..search.workspace import Workspace

# Environment a Ray session of this process sets for itself; restored when the session ends, so a
# later session (another job, another cluster) starts from the caller's settings.
# Ray's own switch between a single-machine Ray (node address 127.0.0.1, as on macOS and Windows)
# and a cluster node (the primary interface's address); its daemons and workers inherit it.
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_SESSION_ENV = ("RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", SINGLE_MACHINE_ENV)
LOOPBACK = "127.0.0.1"
# Settings of a local Ray's raylet and GCS (Ray's system config; a cluster keeps its own).
# prestart_worker_first_driver: Ray starts one idle Python worker per CPU when the first driver
# connects (~80 MiB RSS each), and holds the driver until they are up; trials run in Tune's actors,
# which get workers of their own, so these would idle for the whole job.
RAY_SYSTEM_CONFIG = {"prestart_worker_first_driver": False}


@contextlib.contextmanager
def ray_session(ws: Workspace, address: str | None) -> Iterator[bool]:
    """A Ray session for one job run (the one Ray adapter's entry): the caller's session if one is
    up, ``address`` (a cluster), else a local Ray whose temp dir and auth token live in the
    workspace. Yields whether it started Ray (and so stops it). One process may run many sessions."""
    import ray

    from ray._private import ray_constants

    saved = {k: os.environ.get(k) for k in _SESSION_ENV}
    cluster_mode = ray_constants.ENABLE_RAY_CLUSTER  # read by ray at import; this session may change it
    started = False
    try:
        if not ray.is_initialized():
            _refresh_ray_config()  # this session's auth mode is the environment's now, not an earlier session's
        started = _init_ray(ws, address)
        # Tune's global registry keeps the first session's job id as its key prefix, while workers
        # look the trainable up under their own job's (ray-project/ray#33095): recompute it per session.
        from ray.tune.registry import _global_registry

        _global_registry._prefix = None
        yield started
    finally:
        if started:
            ray.shutdown()
            if not address:
                private_tree(ws.root / "ray")
            link = Path(os.environ.get("RAY_TMPDIR", ""))
            if link.is_symlink() and link.parent == Path("/tmp"):  # the short alias ray_tmpdir() made
                link.unlink(missing_ok=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        ray_constants.ENABLE_RAY_CLUSTER = cluster_mode
        if not ray.is_initialized():
            _refresh_ray_config()


def private_tree(root: Path) -> None:
    """Remove group and other permissions from every folder and file under ``root`` (Ray's
    ``try_make_directory_shared`` makes its folders 0777); links are left alone."""
    for folder, dirs, files in os.walk(root):
        for name in [None, *files]:
            path = Path(folder) if name is None else Path(folder) / name
            with contextlib.suppress(OSError):
                st = path.lstat()
                if not path.is_symlink() and st.st_mode & 0o077:
                    os.chmod(path, st.st_mode & 0o7700)


def _refresh_ray_config() -> None:
    """Make Ray re-read its settings (the auth mode, the token) from the environment: it caches
    them per process, and a driver whose mode differs from the cluster's cannot hear its workers."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # a Ray without token auth
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _init_ray(ws: Workspace, address: str | None) -> bool:
    """Connect to Ray (see :func:`ray_session`, which restores the environment this sets)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")  # the job records errors itself
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/TensorBoard/JSON per trial
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if ray.is_initialized():
        return False
    if address:  # the cluster's auth: RAY_AUTH_MODE and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token)
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        return True
    tmp = ws.ray_tmpdir()
    os.environ["RAY_TMPDIR"] = str(tmp)
    from ray._private import ray_constants

    os.environ[SINGLE_MACHINE_ENV] = "0"  # the raylet, agents and workers: loopback only
    ray_constants.ENABLE_RAY_CLUSTER = False  # this process: 127.0.0.1 stays 127.0.0.1 (not the LAN address)
    if not any(os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        # Ray's default for a new local cluster is token auth with a token it writes to
        # ~/.ray/auth_token (which later `ray start`s on the machine then use); keep ours in the workspace.
        os.environ["RAY_AUTH_MODE"], os.environ["RAY_AUTH_TOKEN_PATH"] = "token", str(ws.ray_auth_token())
        _refresh_ray_config()
    ray.init(_temp_dir=str(tmp), _node_ip_address=LOOPBACK, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR, object_store_memory=256 * 1024**2,  # trials exchange only small dicts
             _system_config=RAY_SYSTEM_CONFIG)
    private_tree(ws.root / "ray")
    return True
