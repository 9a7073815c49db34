"""Usage: python run_all.py ROUNDS variant1 variant2 ...
Runs each variant in a fresh subprocess, round-robin (order rotated every round),
appending JSON lines to results.jsonl; stderr to logs/."""
import json, os, subprocess, sys, time
import psutil
HERE = os.path.dirname(os.path.abspath(__file__))
rounds = int(sys.argv[1]); names = sys.argv[2:]
os.makedirs(f"{HERE}/logs", exist_ok=True)

def wait_no_leftovers(timeout=60):
    # wait until processes started by earlier runs of *this* study are gone
    t = time.time()
    while time.time() - t < timeout:
        left = [p for p in psutil.process_iter(["cmdline", "environ"])
                if p.info["cmdline"] and any("/tmp/ray/session" in c or "gcs_server" in c or "raylet" in c for c in p.info["cmdline"])
                and (p.info.get("environ") or {}).get("RAYSTUDY") == "1"]
        if not left: return
        time.sleep(2)
    print("WARNING leftovers:", [p.pid for p in left], flush=True)

for r in range(rounds):
    order = names[r % len(names):] + names[:r % len(names)]
    for n in order:
        wait_no_leftovers()
        env = dict(os.environ, RAYSTUDY="1")
        t = time.time()
        with open(f"{HERE}/logs/{n}_{time.strftime('%H%M%S')}.err", "w") as err:
            try:
                p = subprocess.run([sys.executable, f"{HERE}/measure.py", n], stdout=subprocess.PIPE,
                                   stderr=err, text=True, timeout=400, env=env)
                line = [l for l in p.stdout.splitlines() if l.startswith("{")]
                rec = json.loads(line[-1]) if line else {"variant": n, "error": f"rc={p.returncode}"}
            except subprocess.TimeoutExpired:
                rec = {"variant": n, "error": "timeout"}
        rec["round"] = r; rec["wall_s"] = round(time.time() - t, 1)
        with open(f"{HERE}/results.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps({k: rec.get(k) for k in ("variant", "round", "startup_s", "idle_cpu_pct", "ray_tree_cpu_pct", "per_actor_uss_mb", "wall_s", "error")}), flush=True)
