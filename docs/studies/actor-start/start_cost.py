"""CPU and wall time to start N ``num_cpus=0`` Ray actors at once (docs/benchmarks.md, "Fault tolerance").

    python docs/studies/actor-start/start_cost.py

Machine CPU is summed over every process (psutil) before and after; the new actors are alive at the end,
so their start-up CPU is included.
"""

import time, os, ray, psutil

ray.init(include_dashboard=False, logging_level="ERROR")


@ray.remote(num_cpus=0)
class A:
    def ping(self):
        return os.getpid()


def cpu_total():
    t = 0.0
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            t += sum(p.cpu_times()[:2])
        except Exception:
            pass
    return t


base = [A.remote() for _ in range(4)]
ray.get([a.ping.remote() for a in base])
time.sleep(2)
for n in (10, 20):
    c0, t0 = cpu_total(), time.perf_counter()
    acts = [A.remote() for _ in range(n)]
    pids = ray.get([a.ping.remote() for a in acts])
    wall = time.perf_counter() - t0
    time.sleep(0.5)
    c1 = cpu_total()
    # add cpu of the new processes (they are alive so included)
    print(f"{n} actors: wall {wall:.2f}s, machine cpu {c1 - c0:.2f}s ({(c1 - c0) / n:.2f}/actor)")
    for a in acts:
        ray.kill(a)
    time.sleep(2)
