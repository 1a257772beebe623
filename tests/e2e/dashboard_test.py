"""The dashboard in real headless Chromium: a pool (server plus two agents on different
providers and sites) runs, and web/tests/dashboard.mjs drives Debian's chromium through
playwright-core against it. The page loads, shows the nodes, and a submitted job appears and
finishes; signed in with a tenant's token, it shows that tenant's jobs and events only
(web/tests/tenant_view.mjs). Then 2,000 hollow nodes join over four sites, and web/tests/fleet_scale.mjs checks
that the page summarises the groups, draws no node until a group is opened, and shows that
group's nodes when it is. The screenshot it takes is left in the test's directory (and kept as
docs/dashboard.png when GPUPOOL_SCREENSHOT names a path)."""
import os
import shutil
import subprocess
import sys

from pool import Pool

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def main(gpupool):
    web = os.path.join(ROOT, "web")
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for need, what in ((os.path.join(web, "dist", "index.html"), "the built dashboard (make web)"),
                       (os.path.join(web, "node_modules", "playwright-core"), "playwright-core (make web)"),
                       (chromium, "Debian's chromium (scripts/bootstrap)")):
        if not os.path.exists(need):
            print(f"FAIL {what} is missing: {need}")
            return 1
    pool = Pool(gpupool)
    try:
        pool.start_server("--web-dir", os.path.join(web, "dist"))
        pool.start_agent("gpu-a", "4xH100", extra=("--provider", "dc", "--site", "dc-east"))
        pool.start_agent("gpu-b", "2xL4", extra=("--provider", "cloud", "--site", "us-west"))
        pool.wait_nodes(2)
        shot = os.path.join(pool.dir, "dashboard.png")
        p = subprocess.run(["node", os.path.join(web, "tests", "dashboard.mjs"), f"http://127.0.0.1:{pool.port}", pool.token,
                            shot, "gpu-a", "gpu-b"], capture_output=True, text=True, timeout=180,
                           env=dict(os.environ, CHROMIUM=chromium))
        print(p.stdout + p.stderr, flush=True)
        if p.returncode == 0 and os.environ.get("GPUPOOL_SCREENSHOT"):
            shutil.copy(shot, os.environ["GPUPOOL_SCREENSHOT"])
        if p.returncode != 0:
            return p.returncode
        # A tenant's token signs in to a view of its own tenant only.
        for name in ("llm", "vision"):
            pool.call("POST", "/v1/tenants", {"name": name, "quota": {"H100": 4}})
        tokens = {n: pool.call("POST", "/v1/tokens", {"tenant": n})[1]["token"] for n in ("llm", "vision")}
        ids = {n: pool.call("POST", "/v1/jobs", {"command": ["sleep", "60"], "gpus": 1, "gpu_model": ["H100"]}, token=tokens[n])[1]["id"]
               for n in ("llm", "vision")}
        p = subprocess.run(["node", os.path.join(web, "tests", "tenant_view.mjs"), f"http://127.0.0.1:{pool.port}", tokens["llm"], "llm",
                            ids["llm"], ids["vision"]], capture_output=True, text=True, timeout=180, env=dict(os.environ, CHROMIUM=chromium))
        print(p.stdout + p.stderr, flush=True)
        if p.returncode != 0:
            return p.returncode
        for jid in ids.values():
            pool.call("POST", f"/v1/jobs/{jid}/cancel")
        # A big fleet: 2,000 hollow nodes over 4 sites; the page summarises groups and opens one
        # on demand.
        hollow = subprocess.Popen([gpupool, "hollow", "--server", f"127.0.0.1:{pool.port}", "--join-token-file",
                                   f"{pool.dir}/server/join.token", "--nodes", "2000", "--sites", "4"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        pool.agents.append(hollow)
        pool.wait_nodes(2002, timeout=120)
        p = subprocess.run(["node", os.path.join(web, "tests", "fleet_scale.mjs"), f"http://127.0.0.1:{pool.port}", pool.token,
                            "2002", "hollow / hollow-site-2"], capture_output=True, text=True, timeout=180,
                           env=dict(os.environ, CHROMIUM=chromium))
        print(p.stdout + p.stderr, flush=True)
        return p.returncode
    finally:
        pool.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
