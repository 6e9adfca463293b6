"""The Ray engine: shards streamed through a Ray Data actor pool, each actor loading the model once.

Ray is an optional extra (``pip install 'tenni[ray]'``), imported only here. Without an address a local Ray is
started bound to 127.0.0.1 (nothing listens on the network) with every core, and shut down after; with
``address`` ("auto" or "HOST:PORT") the job joins that cluster and leaves it running. Ray's own configuration
(``RAY_ADDRESS``, runtime environments, ``ray start`` options) works as usual: nothing here replaces it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time

from ..errors import ConfigError

_FORWARDED_ENV = ("TENNI_", "HF_", "TRANSFORMERS_", "TOKENIZERS_PARALLELISM")


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError("--engine ray needs Ray, which is not installed",
                          hint="pip install 'tenni[ray]' (or use --engine local)") from None
    return ray


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@contextlib.contextmanager
def loopback_only():
    """While a local Ray starts: every process it launches binds to 127.0.0.1.

    ``_node_ip_address="127.0.0.1"`` alone is not enough (Ray 2.60 swaps a loopback address for the machine's
    reachable one, and its servers then listen on every interface); Ray keeps a local-only single-node mode for
    Windows and macOS, switched by ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: set for the processes it starts, and
    in its already-imported constants, then restored, so a later ``address=`` join in this process is unaffected.
    """
    import ray._private.ray_constants as constants

    from .._context import patched, temporary_env

    with temporary_env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_NODE_IP_ADDRESS="127.0.0.1"), \
            patched(constants, "ENABLE_RAY_CLUSTER", False):
        yield


def connect(address: str | None) -> bool:
    """Join ``address`` or start a local Ray on loopback; True when this call started (or joined) it and so must
    shut it down (disconnect) after. A Ray already initialised in this process is used as it is."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV)}
    options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                   runtime_env={"env_vars": env})
    if address is None and not os.environ.get("RAY_ADDRESS"):
        try:
            with loopback_only():
                ray.init(num_cpus=available_cores(), _node_ip_address="127.0.0.1", **options)
        except Exception as err:
            raise ConfigError(f"could not start a local Ray: {type(err).__name__}: {str(err).splitlines()[0]}",
                              hint="check `ray status`, or pass --address of a running cluster") from None
    else:
        try:
            with loopback_only() if _is_loopback(address) else contextlib.nullcontext():
                ray.init(address=address, **options)
        except Exception as err:
            first = str(err).splitlines()[0] if str(err) else ""
            raise ConfigError(f"could not join the Ray cluster at {address or os.environ.get('RAY_ADDRESS')}: "
                              f"{type(err).__name__}: {first}",
                              hint="start it with `ray start --head`, or check the address (auto or HOST:PORT)") \
                from None
    return True


def _is_loopback(address: str | None) -> bool:
    """Whether the cluster to join listens on loopback only (then this driver must use loopback too)."""
    if address is None or address == "auto" or not address.strip():
        try:
            from ray._private.services import canonicalize_bootstrap_address

            address = canonicalize_bootstrap_address(address or "auto")
        except Exception:  # no running cluster found: ray.init says so
            return False
    host = (address or "").split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def pool_size(actors: int | None, cpus_per_actor: float, n_shards: int) -> tuple[int, float, float]:
    """(actors, CPUs per actor, GPUs per actor): one actor per GPU where the cluster has GPUs, else one per
    ``cpus_per_actor`` cores; never more actors than shards."""
    ray = require_ray()
    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0))
    cpus = float(resources.get("CPU", 1))
    if gpus >= 1:
        n = actors or int(gpus)
        gpus_per_actor = min(1.0, gpus / n)
    else:
        n = actors or max(1, int(cpus // cpus_per_actor))
        gpus_per_actor = 0.0
    return max(1, min(n, n_shards)), cpus_per_actor, gpus_per_actor


class _Actor:
    """Ray Data instantiates this once per actor: the model loads here, then every shard reuses it."""

    def __init__(self, spec: dict):
        import ray

        from .jobs import Worker

        if ray.get_gpu_ids():
            os.environ.setdefault("TENNI_DEVICE", "cuda")
        # a model that cannot load here (a folder this node does not see, a missing backbone) fails the shards
        # with its message: raised from the constructor, Ray Data would restart the actor again and again
        self.worker, self.error = None, None
        try:
            self.worker = Worker(spec)
        except Exception as err:
            first = next((line for line in str(err).splitlines() if line.strip()), "")
            self.error = f"the actor could not load the model: {type(err).__name__}: {first}"

    def __call__(self, batch):
        if self.worker is None:
            from .sources import Shard

            names = [Shard.from_dict(json.loads(s)).name for s in batch["shard"]]
            return {"shard": names, "items": [0] * len(names), "rejects": [0] * len(names),
                    "seconds": [0.0] * len(names), "error": [self.error] * len(names)}
        return self.worker(batch)


def run_on_ray(todo, spec: dict, *, address: str | None, actors: int | None, cpus_per_actor: float):
    """Yields {"startup": seconds} once the cluster is up, then one summary per finished shard as it finishes."""
    ray = require_ray()
    began = time.perf_counter()
    owned = connect(address) if todo else False
    try:
        yield {"startup": time.perf_counter() - began}
        if not todo:
            return
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # tenni shows one progress bar, on the driver
        for name in ("ray.data", "ray"):
            logging.getLogger(name).setLevel(logging.WARNING)
        n, cpus, gpus = pool_size(actors, cpus_per_actor, len(todo))
        spec = dict(spec, threads=max(1, int(cpus)))
        items = [{"shard": json.dumps(s.to_dict())} for s in todo]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(_Actor, fn_constructor_args=(spec,), batch_size=1,
                            compute=ray.data.ActorPoolStrategy(size=n), num_cpus=cpus, num_gpus=gpus or None)
        for row in ds.iter_rows():
            yield {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
    finally:
        if owned:
            ray.shutdown()
