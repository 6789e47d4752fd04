"""Render pytest-benchmark JSON files as a Markdown table and a bar chart.

    python examples/benchmark_report.py bench.json [more.json ...] [--png bench.png]

Several files are read as one run: with two threads each implementation is measured in its own
process (see the README), so that thread pools of different libraries do not fight over the cores.
A case measured in several files counts with its fastest run (min of N, as for rounds).

Within each group, every row is compared with its PyTorch counterpart and its NumPy one (same
parameters, other implementation), as ratios of minimum times: below 1 means faster. The chart
shows these ratios and, for the kernels compared with PyTorch (the convolutions), every
implementation's GFLOP/s beside the run's best GEMM rate.
"""

import argparse
import json
from collections import defaultdict, namedtuple
from pathlib import Path


def _impl_and_key(bench):
    params = dict(bench.get("params") or {})
    impl = params.pop("impl", None) or params.pop("engine", None)
    key = (bench["group"], tuple(sorted(params.items())))
    return impl, key


def rows(data):
    by_key = defaultdict(dict)
    for bench in data["benchmarks"]:
        impl, key = _impl_and_key(bench)
        extra = bench.get("extra_info", {})
        found = [(impl, bench)]
        if "torch_min" in extra:   # PyTorch timed in turns with us, inside the same benchmark
            torch_stats = dict(min=extra["torch_min"], median=extra["torch_median"])
            found = [("tinygrad_edu-c", bench), ("torch", dict(stats=torch_stats, extra_info={}))]
        for impl, bench in found:
            kept = by_key[key].get(impl)
            if kept is None or bench["stats"]["min"] < kept["stats"]["min"]:
                by_key[key][impl] = bench   # the same case from several runs: the fastest counts
    table = []
    for (group, params), impls in sorted(by_key.items(), key=lambda kv: kv[0][0]):
        torch_min = impls.get("torch", {}).get("stats", {}).get("min")
        numpy_min = next((impls[k]["stats"]["min"] for k in ("numpy", "numpy-by-hand") if k in impls), None)
        for impl, bench in impls.items():
            stats, extra = bench["stats"], bench.get("extra_info", {})
            table.append(dict(group=group, case=", ".join(f"{k}={v}" for k, v in params), impl=impl,
                              min_us=stats["min"] * 1e6, median_us=stats["median"] * 1e6,
                              vs_torch=stats["min"] / torch_min if torch_min else None,
                              vs_numpy=stats["min"] / numpy_min if numpy_min else None,
                              gflops=extra["flops"] / stats["min"] / 1e9 if "flops" in extra else None,
                              threads=extra.get("threads")))
    return table


def markdown(table, machine):
    out = [f"Machine: {machine}", "",
           "| group | case | implementation | min (µs) | median (µs) | vs PyTorch | vs NumPy | GFLOP/s |",
           "|---|---|---|---:|---:|---:|---:|---:|"]
    fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
    for r in table:
        out.append(f"| {r['group']} | {r['case']} | {r['impl']} | {r['min_us']:.1f} | {r['median_us']:.1f} | "
                   f"{fmt(r['vs_torch'], '.2f')} | {fmt(r['vs_numpy'], '.2f')} | {fmt(r['gflops'], '.1f')} |")
    return "\n".join(out)


Panel = namedtuple("Panel", "kind rows values")   # kind: "ratio" (time vs a baseline) or "GFLOP/s"


def chart_panels(table):
    """What the chart shows. First each row's time relative to its PyTorch counterpart (or, when
    no row has one, its NumPy counterpart). Then, for the groups compared with PyTorch that count
    flops (the convolutions), every implementation's GFLOP/s, PyTorch's included."""
    compared = [r for r in table if r["vs_torch"] is not None and r["impl"] != "torch"]
    baseline = "vs_torch"
    if not compared:
        compared, baseline = [r for r in table if r["vs_numpy"] is not None], "vs_numpy"
    panels = [Panel("ratio", compared, [r[baseline] for r in compared])]
    torch_groups = {r["group"] for r in table if r["impl"] == "torch"}
    rated = [r for r in table if r.get("gflops") is not None and r["group"] in torch_groups]
    if rated:
        panels.append(Panel("GFLOP/s", rated, [r["gflops"] for r in rated]))
    return panels


def best_gemm_rate(table):
    """The fastest GEMM of the run in GFLOP/s (None without GEMM rows): this machine's rate for
    matrix products, the rate a convolution computed as products (im2col + GEMM) can approach."""
    return max((r["gflops"] for r in table if r["group"] == "gemm" and r.get("gflops")), default=None)


def bar_chart(table, path):
    from matplotlib.figure import Figure   # not pyplot: the caller's backend and figures stay as they are
    from tinygrad_edu.vision.utils import atomic_savefig
    panels = chart_panels(table)
    heights = [len(panel.rows) + 2 for panel in panels]   # bars plus room for the axis
    fig = Figure(figsize=(12, 0.3 * sum(heights) + 1))
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw=dict(height_ratios=heights))[:, 0]
    for ax, panel in zip(axes, panels):
        labels = [f"{r['group']} {r['case']} {r['impl']}" for r in panel.rows]
        if panel.kind == "ratio":
            ax.barh(labels, panel.values, color=["tab:green" if v < 1 else "tab:red" for v in panel.values])
            ax.axvline(1.0, color="black", linewidth=1)
            ax.set_xlabel("time relative to PyTorch (or NumPy), lower is faster")
        else:
            ax.barh(labels, panel.values, color=["tab:gray" if r["impl"] == "torch" else "tab:blue"
                                                 for r in panel.rows])
            gemm_rate = best_gemm_rate(table)
            if gemm_rate:
                ax.axvline(gemm_rate, color="black", linewidth=1, linestyle="--",
                           label=f"best GEMM in this run: {gemm_rate:.0f} GFLOP/s")
                ax.legend(loc="best")
            ax.set_xlabel("GFLOP/s, higher is faster")
        ax.invert_yaxis()
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("json", type=Path, nargs="+")
    parser.add_argument("--png", type=Path, default=None)
    args = parser.parse_args(argv)
    runs = [json.loads(path.read_text()) for path in args.json]
    data = dict(runs[0], benchmarks=[bench for run in runs for bench in run["benchmarks"]])
    info = data.get("machine_info", {})
    machine = f"{info.get('cpu', {}).get('brand_raw', '?')}, {info.get('cpu', {}).get('count', '?')} cores, Python {info.get('python_version', '?')}"
    table = rows(data)
    print(markdown(table, machine))
    bar_chart(table, args.png or args.json[0].with_suffix(".png"))


if __name__ == "__main__":
    main()
