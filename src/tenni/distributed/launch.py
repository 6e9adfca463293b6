"""``tenni fit --processes N`` and ``tenni adapt --processes N``: the same command relaunched on N processes by
PyTorch's own launcher.

It runs ``python -m torch.distributed.run --standalone --nproc_per_node N -m tenni fit …`` (what ``torchrun``
runs; ``accelerate launch -m tenni fit …`` works the same way and reads Accelerate's config): every process
runs the whole command, training is data-parallel (see ``strategies/_parallel``), and only the main process
prints and writes the model folder (or the adapted backbone and its checkpoints). On one machine the processes
meet on loopback.
"""

from __future__ import annotations

import os
import subprocess
import sys

from ..errors import ConfigError

PARALLEL_STRATEGIES = ("finetune", "lora", "setfit")
"""Strategies whose training runs data-parallel: those that train the encoder (the shared training loop, and
SetFit's contrastive tuning). ``tenni adapt`` runs data-parallel too, with every method."""


def in_launched_run() -> bool:
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


GENERATE_PARALLEL = ("lora", "qlora")
"""``--task generate`` strategies that train (the adapters), so run data-parallel."""


def check_parallel_fit(strategy: str | None, budget, task: str = "classify") -> None:
    """Refuse, before any work, what cannot run on several processes."""
    if task == "generate":
        if (strategy or "lora") not in (*GENERATE_PARALLEL, "auto"):
            raise ConfigError(f"data-parallel training runs --strategy lora or qlora for --task generate, not "
                              f"{strategy} (it trains nothing)", hint="drop --processes")
    elif strategy not in PARALLEL_STRATEGIES:
        names = ", ".join(PARALLEL_STRATEGIES[:-1]) + f" or {PARALLEL_STRATEGIES[-1]}"
        raise ConfigError(f"data-parallel training runs --strategy {names}, not "
                          f"{strategy or 'auto'}" + (" (a budgeted race, which ranks cannot share)" if not strategy
                                                     or strategy == "auto" else ""),
                          hint="pass --strategy finetune (or lora, setfit), or drop --processes")
    if budget:
        raise ConfigError("--budget stops training on the clock, which would stop the ranks at different steps",
                          hint="drop --budget with --processes")


def check_parallel_adapt(budget) -> None:
    """``tenni adapt --processes``: every method runs data-parallel; a budget on the clock cannot."""
    if budget:
        raise ConfigError("--budget stops training on the clock, which would stop the ranks at different steps",
                          hint="drop --budget with --processes (--max-steps bounds the run)")


def strip_processes(argv: list[str]) -> list[str]:
    """``argv`` without ``--processes N`` / ``--processes=N``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--processes":
            skip = True
            continue
        if arg.startswith("--processes="):
            continue
        out.append(arg)
    return out


def launch_command(processes: int, argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            "-m", "tenni", *strip_processes(argv)]


def relaunch(processes: int, argv: list[str]) -> int:
    """Runs the command on ``processes`` processes; their exit status."""
    env = dict(os.environ)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    env.setdefault("OMP_NUM_THREADS", str(max(1, cores // processes)))  # the cores shared out, not oversubscribed
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one machine: gloo talks over loopback only
    try:
        return subprocess.run(launch_command(processes, argv), env=env).returncode
    except KeyboardInterrupt:
        return 130
