#!/usr/bin/env python3
"""Drive gpupool from Python: submit a small sweep, follow one job's output, wait for all, and
print what the event log said about them. Against `gpupool dev` (make run):

    pip install ./clients/python
    export GPUPOOL_ADDR=https://127.0.0.1:7070 GPUPOOL_CA=/tmp/gpupool-dev/tls/ca.crt \
           GPUPOOL_TOKEN=$(cat /tmp/gpupool-dev/admin.token)
    python3 examples/python_client.py
"""
from gpupool_client import Client


def main():
    c = Client()  # GPUPOOL_ADDR, GPUPOOL_TOKEN, GPUPOOL_CA
    print("nodes:", ", ".join(f"{n.name} ({n.free}/{n.gpus} {n.model} free)" for n in c.nodes()))
    start = max((e.sequence for e in c.events(follow=False)), default=0)
    jobs = [c.submit(["sh", "-c", f"for i in 1 2 3; do echo lr={lr} step $i; sleep 0.2; done"], gpus=1,
                     name=f"sweep-{lr}", env={"LR": str(lr)}, time="10m")
            for lr in (0.1, 0.01, 0.001)]
    for chunk in c.logs(jobs[0].id, follow=True):
        print(chunk, end="")
    for j in jobs:
        done = c.wait(j.id)
        print(f"job {done.id} ({done.name}): {done.state}, exit {done.exit_code}, on {done.node} GPUs {done.gpus}")
    ids = {j.id for j in jobs}
    for e in c.events(since=start, follow=False):
        if e.data.get("id") in ids:
            print(f"  event {e.sequence}: {e.type} {e.subject}")


if __name__ == "__main__":
    main()
