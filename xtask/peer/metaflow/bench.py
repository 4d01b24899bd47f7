"""Metaflow's side of `cargo xtask bench --peer metaflow`.

Runs the flows next to this file with Metaflow's local runtime, local metadata and local
datastore, each in a fresh temporary directory, and writes rows in the format braid's
benches write (a JSON array of {section, name, value, unit, note}); the row names match
braid's, so xtask can put the two side by side.

    python bench.py --json-out rows.json --max-workers 2 [--sizes 100,1000] [--reads 1000]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def env_for(root):
    env = dict(os.environ)
    env.update(
        {
            "USERNAME": env.get("USERNAME") or "braid-bench",
            "METAFLOW_DEFAULT_DATASTORE": "local",
            "METAFLOW_DEFAULT_METADATA": "local",
            "METAFLOW_DATASTORE_SYSROOT_LOCAL": root,
            "METAFLOW_DEFAULT_ENVIRONMENT": "local",
            "METAFLOW_DISABLE_TRACING": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


def tree(path):
    """(bytes, files) under path."""
    size = files = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            try:
                size += os.lstat(os.path.join(dirpath, n)).st_size
                files += 1
            except OSError:
                pass
    return size, files


def run_flow(flow_file, root, args):
    """Runs a flow to its end; returns (wall seconds, peak RSS KiB of the largest process)."""
    cmd = [sys.executable, os.path.join(HERE, flow_file), "--quiet", "run"] + args
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, env=env_for(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    # wait4 reports the child together with every descendant it reaped: Metaflow's
    # runtime starts a process per task, so this is the peak of the largest one.
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(out.decode(errors="replace"))
        raise SystemExit(f"metaflow run of {flow_file} failed ({proc.returncode})")
    return wall, usage.ru_maxrss


def orchestration_rows(label, tasks, wall, rss_kib, root, note):
    size, files = tree(os.path.join(root, ".metaflow"))
    return [
        row("orchestration", f"{label} · wall", wall, "s", note),
        row("orchestration", f"{label} · per task", wall / tasks * 1e6, "µs", f"{tasks} tasks"),
        row("orchestration", f"{label} · peak RSS", rss_kib / 1024, "MiB", "largest process"),
        row("orchestration", f"{label} · store bytes/task", size / tasks, "B", f"{size / 1e6:.1f} MB in .metaflow"),
        row("orchestration", f"{label} · store files/task", files / tasks, "files", f"{files} files"),
    ]


def row(section, name, value, unit, note=""):
    return {"section": section, "name": name, "value": value, "unit": unit, "note": note}


def read_artifacts(root, flow, run_id, reads):
    """Reads `out` of `reads` tasks of the run's `work` step through the Metaflow client."""
    code = f"""
import json, time
from metaflow import Run, namespace
namespace(None)
t0 = time.perf_counter()
run = Run({f"{flow}/{run_id}"!r})
vals = []
for task in run["work"]:
    vals.append(task.data.out)
    if len(vals) == {reads}:
        break
print(json.dumps({{"secs": time.perf_counter() - t0, "n": len(vals)}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env_for(root), capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit("metaflow client read failed")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if res["n"] != reads:
        raise SystemExit(f"metaflow client read {res['n']} artifacts, wanted {reads}")
    return res["secs"]


def latest_run_id(root, flow):
    code = f"""
from metaflow import Flow, namespace
namespace(None)
print(Flow({flow!r}).latest_run.id)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env_for(root), capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit("cannot find the latest metaflow run")
    return out.stdout.strip().splitlines()[-1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--json-out", required=True)
    p.add_argument("--max-workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--sizes", default="100,1000", help="foreach widths, comma-separated")
    p.add_argument("--reads", type=int, default=1000, help="artifacts read through the client")
    a = p.parse_args()

    import metaflow

    note = f"metaflow {metaflow.__version__}, --max-workers {a.max_workers}"
    rows = []
    base = tempfile.mkdtemp(prefix="braid-peer-metaflow-")
    workers = ["--max-workers", str(a.max_workers)]

    root = os.path.join(base, "linear")
    os.makedirs(root)
    sys.stderr.write("peer metaflow: linear 10 steps\n")
    wall, rss = run_flow("linear_flow.py", root, workers)
    rows += orchestration_rows("linear 10 steps", 10, wall, rss, root, note)

    sizes = [int(s) for s in a.sizes.split(",") if s]
    for n in sizes:
        root = os.path.join(base, f"foreach-{n}")
        os.makedirs(root)
        sys.stderr.write(f"peer metaflow: foreach {n:,}\n")
        wall, rss = run_flow("foreach_flow.py", root, workers + ["--max-num-splits", str(max(n, 100)), "--n", str(n)])
        rows += orchestration_rows(f"foreach {n:,}", n + 3, wall, rss, root, note)
        if n == max(sizes) and a.reads <= n:
            sys.stderr.write(f"peer metaflow: client read of {a.reads:,} artifacts\n")
            secs = read_artifacts(root, "ForeachFlow", latest_run_id(root, "ForeachFlow"), a.reads)
            rows.append(
                row("client", f"one artifact from each of {a.reads:,} tasks, one by one", secs, "s", "metaflow client")
            )

    with open(a.json_out, "w") as f:
        json.dump(rows, f, indent=1)
    subprocess.run(["rm", "-rf", base], check=False)


if __name__ == "__main__":
    main()
