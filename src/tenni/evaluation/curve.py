"""Learning curves: accuracy at nested label budgets, a saturating power law fitted to them, and forecasts.

``acc(n) = a - b * n^(-c)`` (n labels per class; a is the plateau) is the standard shape of learning curves
(Hestness et al., 2017; Figueroa et al., 2012). Fitted to the mean over seeds, with a bootstrap over seeds for an
interval, it answers "how many labels per class for accuracy X?" and "how many labels does transfer save
compared with training from scratch, at equal accuracy?".
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class PowerLaw:
    a: float
    b: float
    c: float

    def __call__(self, n):
        return self.a - self.b * np.power(np.asarray(n, dtype=np.float64), -self.c)

    def labels_for(self, target: float) -> float | None:
        """Labels per class to reach ``target``; None when the plateau is below it."""
        if target >= self.a or self.b <= 0 or self.c <= 0:
            return None
        return float((self.b / (self.a - target)) ** (1.0 / self.c))


def fit_power_law(n, acc) -> PowerLaw:
    """Least squares with a <= 1, b >= 0, c in (0, 3]; falls back to a flat line if the fit fails.

    Points are weighted by sqrt(n): the smallest budgets sit in the "small-data region" before the power law
    holds (Hestness et al.), and larger budgets are measured with less noise.
    """
    from scipy.optimize import curve_fit

    n = np.asarray(n, dtype=np.float64)
    acc = np.asarray(acc, dtype=np.float64)

    def f(x, a, b, c):
        return a - b * np.power(x, -c)

    top = float(acc.max())
    p0 = (min(1.0, top + 0.05), max(1e-3, top - float(acc.min())) * float(n.min()) ** 0.5, 0.5)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = curve_fit(f, n, acc, p0=p0, sigma=1.0 / np.sqrt(n), bounds=([0.0, 0.0, 1e-3], [1.0, 10.0, 3.0]),
                                  maxfev=20000)
        return PowerLaw(*map(float, params))
    except (RuntimeError, ValueError):
        return PowerLaw(float(acc.mean()), 0.0, 1.0)


@dataclass
class CurveResult:
    strategy: str
    budgets: list[int]
    accuracy: dict[str, list[float]]  # per budget (as str): accuracy per seed
    law: dict
    forecast: dict[str, dict] = field(default_factory=dict)  # per budget: mean, low, high


def backtest(budgets, mean) -> tuple[float, float]:
    """(|error|, log step) of the power law fitted to the budgets up to half the last one, forecasting the last.

    The step is a doubling or more, so seed noise between two close budgets (16 and 17, say) is not mistaken for
    the curve's extrapolation error. (0, 1) when fewer than three budgets lie at or below half the last."""
    budgets = [int(b) for b in budgets]
    early = [i for i, b in enumerate(budgets) if b <= budgets[-1] / 2]
    if len(early) < 3:
        return 0.0, 1.0
    mean = np.asarray(mean)
    law = fit_power_law([budgets[i] for i in early], mean[early])
    step = float(np.log(budgets[-1] / budgets[early[-1]]))
    return float(abs(float(law(budgets[-1])) - float(mean[-1]))), step


def summarise_curve(strategy: str, budgets: list[int], per_seed: np.ndarray, forecast_at: list[int],
                    seed: int = 0, bootstrap: int = 200) -> CurveResult:
    """per_seed: (seeds, budgets) accuracies."""
    mean = per_seed.mean(axis=0)
    law = fit_power_law(budgets, mean)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap if per_seed.shape[0] > 1 else 0):
        sample = per_seed[rng.integers(0, per_seed.shape[0], per_seed.shape[0])].mean(axis=0)
        draws.append(fit_power_law(budgets, sample)(forecast_at))
    forecast = {}
    point = law(forecast_at)
    draws_arr = np.asarray(draws) if draws else None
    miss, step = backtest(budgets, mean)
    for k, n in enumerate(forecast_at):
        lo, hi = (np.quantile(draws_arr[:, k], [0.05, 0.95]) if draws_arr is not None else (point[k], point[k]))
        # seed-to-seed noise of a single run is part of what the user will see: widen by the spread at the top
        spread = float(per_seed[:, -1].std()) if per_seed.shape[0] > 1 else 0.0
        # and the curve's own extrapolation error: how far the fit to the earlier budgets missed the last one,
        # scaled by how many such steps (in log budget) lie between the last budget and this one
        margin = miss * max(0.0, float(np.log(n / budgets[-1])) / step)
        forecast[str(n)] = {"mean": float(point[k]), "low": float(max(0.0, min(lo, point[k]) - spread - margin)),
                            "high": float(min(1.0, max(hi, point[k]) + spread + margin))}
    return CurveResult(strategy, list(map(int, budgets)),
                       {str(b): per_seed[:, i].tolist() for i, b in enumerate(budgets)}, asdict(law), forecast)


def run_curve(data, *, strategy: str | None = None, backbone: str = "auto", budgets: list[int] | None = None,
              seeds: int = 3, test=None, test_size: float = 0.3, baseline: bool = True, forecast_at=None,
              config=None, **read_options) -> dict:
    """Accuracy at nested budgets for ``strategy`` and the scratch baseline; power-law fits and forecasts."""
    from .._logging import progress
    from ..choose import choose_backbone, choose_strategy, make_estimator
    from ..errors import ConfigError, DataError
    from .protocol import split_for_fit

    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ConfigError(f"a learning curve needs at least 1 seed (random draws per budget), got {seeds}",
                          hint="--seeds 3")
    if budgets is not None and any(isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1
                                   for b in budgets):
        raise ConfigError(f"label budgets are whole numbers of labels per class, 1 or more; got {budgets}",
                          hint="--budgets 2,4,8,16")
    given = budgets is not None
    train, test_set = split_for_fit(data, test, test_size=test_size, seed=0, **read_options)
    # every point of the curve is a fit: race-free strategies only (auto would race at each budget and seed)
    strategy = "probe" if strategy in (None, "auto") else choose_strategy(strategy, train.inputs, train.modality)
    backbone = choose_backbone(backbone, train.inputs, strategy, train.modality)
    smallest = min(train.class_counts().values())
    if budgets is None:
        budgets = [b for b in (2, 4, 8, 16, 32, 64, 128, 256, 512) if b <= smallest]
        if smallest not in budgets and smallest > 2:
            budgets.append(smallest)
    budgets = sorted(b for b in set(budgets) if 1 <= b <= smallest)
    if len(budgets) < 3:
        if given:
            raise DataError(f"a learning curve needs at least 3 distinct label budgets up to the smallest class's "
                            f"{smallest} training examples; --budgets gives {len(budgets)}: {budgets}",
                            path=train.path, hint="--budgets 2,4,8 (each at most the smallest class's size)")
        raise DataError(f"a learning curve needs at least 3 label budgets, but the smallest class has only "
                        f"{smallest} training examples", path=train.path, hint="add data or pass --budgets")
    forecast_at = sorted(set(forecast_at or [budgets[-1] * 2, budgets[-1] * 4]))
    labels = np.asarray(train.labels)
    names = [strategy] + (["scratch"] if baseline and strategy != "scratch" else [])
    accuracy = {name: np.zeros((seeds, len(budgets))) for name in names}
    with progress("learning curve", seeds * len(budgets) * len(names)) as bar:
        for s in range(seeds):
            rng = np.random.default_rng(s)
            order = {c: rng.permutation(np.flatnonzero(labels == c)) for c in train.classes}
            for j, b in enumerate(budgets):  # nested: budget b's examples include those of smaller budgets
                idx = sorted(int(i) for c in train.classes for i in order[c][:b])
                subset = train.subset(idx)
                for name in names:
                    est = make_estimator(name, backbone, config if name == strategy else None, seed=s,
                                         modality=train.modality)
                    est.fit(subset.inputs, subset.labels)
                    accuracy[name][s, j] = float(np.mean(est.predict(test_set.inputs) == np.asarray(test_set.labels)))
                    bar.advance(1)
    curves = {name: summarise_curve(name, budgets, acc, forecast_at) for name, acc in accuracy.items()}
    result = {"strategy": strategy, "backbone": backbone, "budgets": budgets, "seeds": seeds,
              "test_size": len(test_set), "curves": {k: asdict(v) for k, v in curves.items()}}
    if len(curves) == 2:
        result["labels_saved"] = labels_saved(curves[strategy], curves["scratch"], budgets)
    result["zeroshot"] = zero_shot_point(train, test_set, backbone)
    return result


def zero_shot_point(train, test_set, backbone: str) -> dict | None:
    """The curve's point at 0 labels: zero-shot from the label names (text whose labels are words), fitted on the
    training texts without their labels; None where it does not apply."""
    from ..backbones import get_backbone
    from ..strategies.zeroshot import ZeroShot, label_names_are_words

    if train.modality != "text" or not label_names_are_words(train.classes) or not backbone:
        return None
    if get_backbone(backbone).modality != "text":
        return None
    est = ZeroShot(backbone=backbone, config={"labels": tuple(train.classes)}).fit(train.inputs)
    accuracy = float(np.mean(est.predict(test_set.inputs) == np.asarray(test_set.labels)))
    return {"labels_per_class": 0, "accuracy": accuracy, "strategy": "zeroshot"}


def needed_labels(accuracy: dict, law: dict, target: float) -> float | None:
    """Labels per class to reach ``target``: the smallest measured budget whose mean reaches it (measurements
    outrank the fit), else the power law's extrapolation beyond the largest budget; None when the law's plateau is
    below the target."""
    means = sorted((int(b), float(np.mean(a))) for b, a in accuracy.items())
    reached = [b for b, m in means if m >= target]
    if reached:
        return float(reached[0])
    needed = PowerLaw(**law).labels_for(target)
    return None if needed is None else max(needed, float(means[-1][0]))


def labels_saved(transfer: CurveResult, scratch: CurveResult, budgets: list[int]) -> dict:
    """At the accuracy transfer reaches with the largest budget, the labels per class scratch would need."""
    law_t, law_s = PowerLaw(**transfer.law), PowerLaw(**scratch.law)
    target = float(law_t(budgets[-1]))
    needed = needed_labels(scratch.accuracy, scratch.law, target)
    return {"target_accuracy": target, "transfer_labels_per_class": budgets[-1],
            "scratch_labels_per_class": needed,
            "factor": None if needed is None else needed / budgets[-1],
            "scratch_plateau": law_s.a}


def labels_for(result: dict, strategy: str, target: float) -> float | None:
    curve = result["curves"][strategy]
    return needed_labels(curve["accuracy"], curve["law"], target)


def plot_curve(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    budgets = result["budgets"]
    top = max(budgets + [int(n) for c in result["curves"].values() for n in c["forecast"]])
    grid = np.geomspace(min(budgets), top, 100)
    for (name, curve), colour in zip(result["curves"].items(), ("tab:blue", "tab:orange", "tab:green")):
        acc = np.array([curve["accuracy"][str(b)] for b in budgets])
        ax.errorbar(budgets, acc.mean(1), yerr=acc.std(1), fmt="o", color=colour, capsize=3,
                    label=f"{name} (measured)")
        ax.plot(grid, PowerLaw(**curve["law"])(grid), "-", color=colour, alpha=0.7,
                label=f"{name} fit: plateau {curve['law']['a']:.3f}")
        for n, f in curve["forecast"].items():
            ax.errorbar([int(n)], [f["mean"]], yerr=[[f["mean"] - f["low"]], [f["high"] - f["mean"]]], fmt="s",
                        mfc="none", color=colour, capsize=3)
    if result.get("zeroshot"):  # 0 labels has no place on a log axis: a line across it
        ax.axhline(result["zeroshot"]["accuracy"], ls="--", color="tab:green",
                   label=f"zero-shot from label names (0 labels): {result['zeroshot']['accuracy']:.3f}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("labeled examples per class")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"learning curve: {result['strategy']} on {result['backbone']} vs scratch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def curve_table(result: dict) -> list[list[str]]:
    rows = []
    if result.get("zeroshot"):
        rows.append(["zeroshot", "0", f"{result['zeroshot']['accuracy']:.3f}", "measured (label names only)"])
    for name, curve in result["curves"].items():
        for b in result["budgets"]:
            acc = np.asarray(curve["accuracy"][str(b)])
            rows.append([name, str(b), f"{acc.mean():.3f} ± {acc.std():.3f}", "measured"])
        for n, f in curve["forecast"].items():
            rows.append([name, n, f"{f['mean']:.3f} [{f['low']:.3f}, {f['high']:.3f}]", "forecast"])
    return rows


