"""The Markdown table that bench.sh and bench_hub.sh print from a run's directory.

Both write results.tsv (implementation, repetition, metric, value; "nan" for a
failed measurement) and machine.txt ("key: value" lines); each script keeps its
own rows and column names and builds its table from these pieces.
"""
import math
import statistics


class Results:
    """The measured values of one run, by (implementation, metric)."""

    def __init__(self, out):
        self.out = out
        self.values = {}
        with open(f"{out}/results.tsv") as f:
            for line in f:
                impl, _rep, metric, value = line.rstrip("\n").split("\t")
                try:
                    v = float(value)
                except ValueError:
                    v = math.nan
                if not math.isnan(v):
                    self.values.setdefault((impl, metric), []).append(v)

    def mean(self, impl, metric):
        vs = self.values.get((impl, metric))
        return statistics.mean(vs) if vs else None

    def cell(self, impl, metric, fmt):
        """The mean, and half the spread between repetitions relative to it."""
        vs = self.values.get((impl, metric))
        if not vs:
            return "–"
        m = statistics.mean(vs)
        text = fmt.format(m)
        if len(vs) > 1 and m:
            text += f" ±{(max(vs) - min(vs)) / 2 / abs(m) * 100:.0f}%"
        return text

    def best_other(self, metric, higher, others, names):
        """pipevpn's mean over the best of `others` and which one that is; the
        best is the highest of a ↑ figure (higher True) and the lowest of a ↓
        one; a row that is no score (higher None) gets no ratio."""
        if higher is None:
            return "–"
        found = [(self.mean(i, metric), i) for i in others if self.mean(i, metric) is not None]
        x = self.mean("pipevpn", metric)
        if not found or x is None:
            return "–"
        y, who = (max if higher else min)(found)
        return f"{x / y:.2f} ({names[who]})" if y else f"– ({names[who]}: 0)"

    def machine(self):
        """The line on the machine, the runs and the load around them."""
        with open(f"{self.out}/machine.txt") as f:
            info = dict(line.rstrip("\n").split(": ", 1) for line in f if ": " in line)
        return (
            f"{info['cpus']}, {info['memory']}, kernel {info['kernel']}; {info['runs']}; "
            f"load average before {info['load before'].split()[0]}, "
            f"after {info['load after'].split()[0]}."
        )


def row(cells):
    """One line of a Markdown table."""
    return "| " + " | ".join(cells) + " |"


def print_head(head):
    print(row(head))
    print("|" + "---|" * len(head))
