"""Usage: python measure.py <variant_name> [extra_json_spec]
Runs one variant in this (fresh) process and prints one JSON line."""
import json, os, sys, time, logging

name = sys.argv[1]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if len(sys.argv) > 2:
    spec = json.loads(sys.argv[2])
else:
    from variants import VARIANTS
    spec = VARIANTS[name]
env = dict(spec.get("env", {}))
init_kw = dict(spec.get("init", {}))
sysconf = spec.get("sysconf")
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.update(env)          # must happen before importing ray

import psutil

N = 100
SETTLE = 5
WINDOW = 10.0
BUSY = ("user", "system", "nice", "irq", "softirq")


def busy_seconds():
    t = psutil.cpu_times()
    return sum(getattr(t, f, 0.0) for f in BUSY)


def is_ray_proc(p):
    try:
        cl = " ".join(p.cmdline())
    except psutil.Error:
        return False
    return ("ray::" in cl) or ("raylet" in cl) or ("gcs_server" in cl)


def classify(p):
    try:
        cl = " ".join(p.cmdline())
    except psutil.Error:
        return "gone"
    if "ray::A" in cl: return "actors"
    if "ray::" in cl: return "other_workers"   # idle/prestarted workers (ray::IDLE)
    if "gcs_server" in cl: return "gcs"
    if "raylet/raylet" in cl or cl.startswith("raylet"): return "raylet"
    if "log_monitor" in cl: return "log_monitor"
    if "dashboard" in cl: return "dashboard"
    if "monitor.py" in cl or "autoscaler" in cl: return "monitor"
    if "runtime_env" in cl or "agent" in cl: return "agents"
    return "other:" + os.path.basename(cl.split(" ")[0]) if cl else "other"


def proc_cpu(p):
    try:
        t = p.cpu_times()
        return t.user + t.system
    except psutil.Error:
        return None


out = {"variant": name, "env": env, "init": {k: v for k, v in init_kw.items()},
       "sysconf": sysconf, "ts": time.strftime("%H:%M:%S")}

if name == "noray":
    time.sleep(SETTLE)
    b0, t0 = busy_seconds(), time.monotonic()
    time.sleep(WINDOW)
    b1, t1 = busy_seconds(), time.monotonic()
    out.update(startup_s=None, idle_cpu_pct=round((b1 - b0) / (t1 - t0) * 100, 1),
               total_uss_mb=0.0)
    print(json.dumps(out), flush=True)
    sys.exit(0)

import ray

kw = dict(include_dashboard=False, logging_level=logging.WARNING)
kw.update(init_kw)
if sysconf:
    kw["_system_config"] = sysconf
t = time.monotonic()
ray.init(**kw)
out["init_s"] = round(time.monotonic() - t, 2)


@ray.remote(num_cpus=0)
class A:
    def ping(self):
        return 1


t0 = time.monotonic()
actors = [A.remote() for _ in range(N)]
assert sum(ray.get([a.ping.remote() for a in actors], timeout=600)) == N
out["startup_s"] = round(time.monotonic() - t0, 2)
# CPU seconds each actor process consumed to start up (python import + core worker init)
_ac = [proc_cpu(p) for p in psutil.Process().children(recursive=True) if classify(p) == "actors"]
_ac = [c for c in _ac if c is not None]
out["actor_startup_cpu_s_each"] = round(sum(_ac) / max(len(_ac), 1), 3)

time.sleep(SETTLE)
me = psutil.Process()
tree = [me] + me.children(recursive=True)
actor_pids = [p.pid for p in tree if classify(p) == "actors"]
HZ = os.sysconf("SC_CLK_TCK")


def thread_snap():
    d = {}
    for pid in actor_pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
                st = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
                cs = 0
                for l in open(f"/proc/{pid}/task/{tid}/status"):
                    if "ctxt_switches" in l:
                        cs += int(l.split()[1])
                kind = "main" if tid == str(pid) else comm
                d[(pid, tid)] = (kind, (int(st[11]) + int(st[12])) / HZ, cs)
            except (OSError, IndexError, ValueError):
                pass
    return d, time.monotonic()


ts0, tt0 = thread_snap()
c0 = {p.pid: proc_cpu(p) for p in tree}
b0, w0 = busy_seconds(), time.monotonic()
time.sleep(WINDOW)
b1, w1 = busy_seconds(), time.monotonic()
dt = w1 - w0
out["idle_cpu_pct"] = round((b1 - b0) / dt * 100, 1)

# CPU of our own Ray process tree during the window (less noisy than machine CPU)
breakdown = {}
tree_cpu = 0.0
for p in tree:
    c1 = proc_cpu(p)
    if c1 is None or c0.get(p.pid) is None:
        continue
    d = c1 - c0[p.pid]
    tree_cpu += d
    k = "driver" if p.pid == me.pid else classify(p)
    breakdown[k] = breakdown.get(k, 0.0) + d
out["ray_tree_cpu_pct"] = round(tree_cpu / dt * 100, 1)
out["cpu_breakdown_pct"] = {k: round(v / dt * 100, 1) for k, v in sorted(breakdown.items())}
ts1, tt1 = thread_snap()
tcpu, tcs = {}, {}
for k, (kind, c, cs) in ts1.items():
    if k in ts0:
        tcpu[kind] = tcpu.get(kind, 0.0) + c - ts0[k][1]
        tcs[kind] = tcs.get(kind, 0) + cs - ts0[k][2]
tdt = tt1 - tt0
na = max(len(actor_pids), 1)
# per-actor: CPU % of one core and wakeups (context switches) per second, by thread name
out["actor_thread_cpu_pct_per_actor"] = {k: round(v / tdt * 100 / na, 3) for k, v in sorted(tcpu.items(), key=lambda kv: -kv[1]) if v > 0}
out["actor_wakeups_per_s_per_actor"] = round(sum(tcs.values()) / tdt / na, 1)
out["actor_main_thread_wakeups_per_s"] = round(tcs.get("main", 0) / tdt / na, 1)

# USS of ray processes (restricted to our own process tree so that other users' Ray
# clusters on this machine are not counted)
tree = me.children(recursive=True)
uss = {}
nthreads = {}
counts = {}
for p in tree:
    if not is_ray_proc(p):
        continue
    try:
        u = p.memory_full_info().uss
        nt = p.num_threads()
    except psutil.Error:
        continue
    k = classify(p)
    uss[k] = uss.get(k, 0) + u
    nthreads[k] = nthreads.get(k, 0) + nt
    counts[k] = counts.get(k, 0) + 1
total = sum(uss.values())
out["total_uss_mb"] = round(total / 2**20, 1)
out["per_actor_uss_mb"] = round(uss.get("actors", 0) / 2**20 / max(counts.get("actors", 1), 1), 1)
out["uss_breakdown_mb"] = {k: round(v / 2**20, 1) for k, v in uss.items()}
out["proc_counts"] = counts
out["threads_per_proc"] = {k: round(nthreads[k] / counts[k], 1) for k in counts}

# Evidence that settings took effect: markers in core-worker / raylet logs of this session
try:
    import glob, re
    sess = ray._private.worker._global_node.get_session_dir_path()
    wlogs = sorted(glob.glob(f"{sess}/logs/python-core-worker-*.log"))[:5]
    txt = "".join(open(f, errors="replace").read() for f in wlogs)
    m = {}
    m["stats_disabled"] = "Disabled stats" in txt
    r = re.search(r"Reporting task events to GCS every (\d+)ms", txt)
    m["task_events_ms"] = int(r.group(1)) if r else None
    m["task_events_disabled_msg"] = "Task Event Buffer is disabled" in txt
    m["event_stats_dump"] = "Event stats:" in txt
    m["event_stats_disabled_msg"] = "Stats collection disabled" in txt
    out["log_markers"] = m
except Exception as e:
    out["log_markers"] = {"error": repr(e)}

ray.shutdown()
print(json.dumps(out), flush=True)
