"""A real Prometheus (Debian's) scrapes a running server and two agents. The test checks that the
per-GPU series arrive with dcgm-exporter's names and labels, and that the node-load and
scheduler series arrive too, through Prometheus' own query API. `promtool check metrics`
checks both expositions. dcgm-exporter's label `modelName` is camelCase, and promtool's lint
flags camelCase label names. That warning alone is allowed: it is the price of working with
existing DCGM dashboards. Any other problem fails the test."""
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from pool import Checks, Pool, free_port

ALLOWED_LINT = "label names should be written in 'snake_case' not 'camelCase'"


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def promtool(c, name, text):
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    problems = [l for l in (p.stdout + p.stderr).splitlines() if l.strip()]
    other = [l for l in problems if ALLOWED_LINT not in l or not l.startswith("DCGM_FI_")]
    c.check(p.returncode in (0, 3) and not other, f"promtool check metrics on the {name}: rc {p.returncode}, {other[:5]}")
    return len(problems)


def query(prom, q):
    body = json.loads(get(f"http://127.0.0.1:{prom}/api/v1/query?query={urllib.parse.quote(q)}"))
    return body["data"]["result"] if body.get("status") == "success" else []


def main(gpupool):
    c = Checks()
    if not shutil.which("prometheus") or not shutil.which("promtool"):
        print("FAIL prometheus and promtool are needed (Debian package prometheus; scripts/bootstrap installs it)")
        return 1
    pool = Pool(gpupool)
    prom_proc = None
    try:
        pool.start_server()
        ports = {"a": free_port(), "b": free_port()}
        pool.start_agent("a", "2xH100", metrics=f"127.0.0.1:{ports['a']}")
        pool.start_agent("b", "4xA100", metrics=f"127.0.0.1:{ports['b']}")
        pool.wait_nodes(2)
        # Work for the scheduler series: a job that runs, and one that waits (no node has 8 GPUs).
        done = pool.submit(["true"], gpus=1, name="quick")
        pool.call("POST", "/v1/jobs", {"command": ["true"], "gpus": 8, "tenant": "vision", "name": "too-big"})
        pool.wait_jobs([done], timeout=20)
        time.sleep(0.6)  # a sample after the job, on both agents
        server_text = get(f"http://127.0.0.1:{pool.port}/metrics")
        agent_text = get(f"http://127.0.0.1:{ports['a']}/metrics")
        promtool(c, "server's /metrics", server_text)
        promtool(c, "agent's /metrics", agent_text)

        prom = free_port()
        d = os.path.join(pool.dir, "prometheus")
        os.makedirs(d)
        with open(f"{d}/prometheus.yml", "w") as f:
            rules = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "prometheus", "gpupool-rules.yml")
            f.write(f"global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n"
                    f"rule_files: ['{os.path.abspath(rules)}']\nscrape_configs:\n"
                    f"  - job_name: gpupool-server\n    static_configs:\n      - targets: ['127.0.0.1:{pool.port}']\n"
                    "  - job_name: gpupool-agent\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{ports['a']}', '127.0.0.1:{ports['b']}']\n")
        prom_proc = subprocess.Popen(
            ["prometheus", f"--config.file={d}/prometheus.yml", f"--storage.tsdb.path={d}/data",
             f"--web.listen-address=127.0.0.1:{prom}"], stdout=open(f"{d}/log", "w"), stderr=subprocess.STDOUT)
        want = {
            'up{job="gpupool-server"} == 1': 1,
            'up{job="gpupool-agent"} == 1': 2,
            'DCGM_FI_DEV_GPU_UTIL{job="gpupool-agent", Hostname="a", gpu="1", UUID="GPU-sim-a-01", device="nvidia1", '
            'modelName="Simulated H100"}': 1,
            'DCGM_FI_DEV_FB_FREE{job="gpupool-agent", Hostname="b"}': 4,
            'DCGM_FI_DEV_FB_USED{job="gpupool-agent"}': 6,
            'DCGM_FI_DEV_POWER_USAGE{job="gpupool-agent"}': 6,
            'DCGM_FI_DEV_GPU_TEMP{job="gpupool-agent"}': 6,
            'DCGM_FI_DEV_XID_ERRORS{job="gpupool-agent"}': 6,
            'DCGM_FI_DEV_GPU_UTIL{job="gpupool-server", Hostname="b"}': 4,
            'gpupool_node_load_l{job="gpupool-agent", node="a"}': 1,
            'gpupool_node_load_r{job="gpupool-server"}': 2,
            'gpupool_queue_length{job="gpupool-server", tenant="vision", reason=~"never-fits:.*"} == 1': 1,
            'gpupool_jobs{job="gpupool-server", state="succeeded"} == 1': 1,
            'gpupool_placements_total{job="gpupool-server"} >= 1': 1,
            'gpupool_schedule_decision_seconds_count{job="gpupool-server"} >= 1': 1,
            'gpupool_nodes{job="gpupool-server", state="ready"} == 2': 1,
            'gpupool_agent_tasks_running{job="gpupool-agent"}': 2,
            'gpupool_node_up{job="gpupool-server"} == 1': 2,
            'gpupool_queue_oldest_wait_seconds{job="gpupool-server", tenant="vision"} > 0': 1,
        }
        got = {}
        deadline = time.time() + 40
        while time.time() < deadline:
            try:
                got = {q: len(query(prom, q)) for q in want}
            except OSError:
                got = {}
            if got and all(got[q] == n for q, n in want.items()):
                break
            time.sleep(0.5)
        for q, n in want.items():
            c.check(got.get(q) == n, f"Prometheus has {n} series for {q} (got {got.get(q)})")
        # The alerting rules of examples/prometheus load and evaluate against the live series.
        with urllib.request.urlopen(f"http://127.0.0.1:{prom}/api/v1/rules", timeout=5) as r:
            groups = json.load(r)["data"]["groups"]
        rules = [x for g in groups for x in g["rules"]]
        c.check(len(rules) == 4 and all(x.get("health") == "ok" for x in rules),
                f"the 4 alerting rules loaded and evaluate: {[(x['name'], x.get('health'), x.get('lastError')) for x in rules]}")
        ok = sum(1 for q, n in want.items() if got.get(q) == n)
        print(f"Prometheus scraped the server and 2 agents: {ok}/{len(want)} expected series queries answered")
    finally:
        if prom_proc:
            prom_proc.terminate()
            prom_proc.wait(timeout=10)
        pool.stop()
    # With --metrics-token-file, /metrics wants that token (or the admin's).
    locked = Pool(gpupool)
    try:
        locked.start_server("--metrics-token-file", f"{locked.dir}/metrics.token")
        token = open(f"{locked.dir}/metrics.token").read().strip()
        status, _ = locked.call("GET", "/metrics", token=None)
        c.check(status == 401, f"/metrics without a token is refused ({status})")
        status, _ = locked.call("GET", "/metrics", token="not-it")
        c.check(status == 401, f"/metrics with a wrong token is refused ({status})")
        status, body = locked.call("GET", "/metrics", token=token)
        c.check(status == 200 and "gpupool_" in body, f"/metrics with the metrics token answers ({status})")
        status, _ = locked.call("GET", "/metrics")
        c.check(status == 200, f"/metrics with the admin token answers ({status})")
    finally:
        locked.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
