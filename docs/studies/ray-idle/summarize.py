"""Summarize results.jsonl into a markdown table of medians."""
import json, statistics as st, sys, os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from variants import VARIANTS
rows = [json.loads(l) for l in open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.jsonl"))]
by = {}
for r in rows:
    if r.get("error"):
        continue
    by.setdefault(r["variant"], []).append(r)
def med(rs, k):
    v = [r[k] for r in rs if r.get(k) is not None]
    return round(st.median(v), 2) if v else None
def rng(rs, k):
    v = [r[k] for r in rs if r.get(k) is not None]
    return f"{min(v)}–{max(v)}" if len(v) > 1 else (str(v[0]) if v else "")
def main_cpu(r):
    return (r.get("actor_thread_cpu_pct_per_actor") or {}).get("main")
print("| variant | settings | runs | startup_s median (range) | machine idle CPU % median | Ray-tree CPU % median (range) | actor CPU % | log-monitor CPU % | per-actor USS MB | total USS MB | threads/actor | startup CPU-s/actor | wakeups/s/actor (main) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
order = list(VARIANTS)
for n in order:
    rs = by.get(n)
    if not rs: continue
    spec = VARIANTS[n]
    sett = ", ".join([f"{k}={v}" for k, v in spec.get("env", {}).items()] + [f"ray.init({k}={v})" for k, v in spec.get("init", {}).items()]) or "—"
    for r in rs:
        r["_act"] = (r.get("cpu_breakdown_pct") or {}).get("actors")
        r["_lm"] = (r.get("cpu_breakdown_pct") or {}).get("log_monitor")
        r["_thr"] = (r.get("threads_per_proc") or {}).get("actors")
    wk = [r for r in rs if r.get("actor_wakeups_per_s_per_actor") is not None]
    wks = f"{med(wk,'actor_wakeups_per_s_per_actor')} ({med(wk,'actor_main_thread_wakeups_per_s')})" if wk else ""
    print(f"| {n} | {sett} | {len(rs)} | {med(rs,'startup_s')} ({rng(rs,'startup_s')}) | {med(rs,'idle_cpu_pct')} | {med(rs,'ray_tree_cpu_pct')} ({rng(rs,'ray_tree_cpu_pct')}) | {med(rs,'_act')} | {med(rs,'_lm')} | {med(rs,'per_actor_uss_mb')} | {med(rs,'total_uss_mb')} | {med(rs,'_thr')} | {med(rs,'actor_startup_cpu_s_each')} | {wks} |")
