"""Fault injection with real server and agent processes on loopback. Each scenario runs a job,
breaks the node it runs on, and checks that the job is placed again elsewhere, whole, and that
its attempts never overlap in time (the old one stops itself when its lease runs out). Prints
the time to detect the failure and the time to place the job again.
  kill: SIGKILL the agent (its tasks live on under their supervisors until the lease ends)
  hang: SIGSTOP the agent, then SIGCONT it after the job has moved (it must stop its old attempt)
  xid:  XID 79 (GPU fallen off the bus) on the job's GPU: that GPU is quarantined, the job moves
  adopt: SIGKILL the agent and start it again at once: it adopts its running task
  netcut: an agent in a network namespace of the test's own, joined by a veth pair, loses its
        link (where the machine allows namespaces; the output says when it has to skip)
Server kills in the middle of a burst are crash_test.py's."""
import os
import signal
import subprocess
import sys
import time

from pool import Checks, Pool

# Each attempt adds itself to a file in its checkpoint directory, which the pool carries from
# node to node (each agent has a work directory of its own: nothing is shared): the 4th field
# of a start line is what the attempt found there.
JOB = ('mkdir -p "$GPUPOOL_CHECKPOINT_DIR" && echo "$GPUPOOL_ATTEMPT" >> "$GPUPOOL_CHECKPOINT_DIR/attempts"; '
       'echo "$GPUPOOL_ATTEMPT $GPUPOOL_NODE $(date +%s.%N) $(paste -sd, "$GPUPOOL_CHECKPOINT_DIR/attempts")" >> {out}/{name}.starts; '
       # Written whole and renamed: a kill in the middle never leaves a half-written time.
       'while [ ! -e {out}/{name}.stop ]; do date +%s.%N > {out}/{name}.a$GPUPOOL_ATTEMPT.tmp && '
       'mv {out}/{name}.a$GPUPOOL_ATTEMPT.tmp {out}/{name}.a$GPUPOOL_ATTEMPT; sleep 0.05; done')


def job_state(pool, jid):
    return pool.call("GET", f"/v1/jobs/{jid}")[1]


def watch_failover(pool, jid, t_break, broken):
    """Polls until the job runs again as a later attempt: returns (time the break was seen by
    `broken(pool)`, time it ran again, the job), times None when they did not come in 15 s."""
    t_down = t_moved = None
    j = job_state(pool, jid)
    while time.time() - t_break < 15:
        if t_down is None and broken(pool):
            t_down = time.time()
        j = job_state(pool, jid)
        if j["attempt"] >= 2 and j["state"] == "running":
            t_moved = time.time()
            break
        time.sleep(0.02)
    return t_down, t_moved, j


def wait_running(pool, jid, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline and job_state(pool, jid)["state"] != "running":
        time.sleep(0.02)
    return job_state(pool, jid)


def scenario(pool, c, out, name, agents, how):
    jid = pool.submit(["sh", "-c", JOB.format(out=out, name=name)], gpus=2, name=name)
    j = wait_running(pool, jid)
    node = j["node"]
    c.check(j["state"] == "running" and j["attempt"] == 1, f"{name}: first attempt running ({j['state']})")
    time.sleep(1.0)  # let heartbeats settle into their rhythm
    victim = agents[node]
    gpu = j["gpus"][0]
    t_break = time.time()
    if how == "xid":
        status, res = pool.call("POST", f"/v1/nodes/{node}/gpus/{gpu}/xid", {"xid": 79})
        c.check(status == 200 and "quarantined" in res.get("result", ""), f"{name}: XID 79 quarantines ({res})")
    else:
        os.killpg(victim.pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
    if how == "xid":
        broken = lambda p: p.call("GET", f"/v1/nodes/{node}")[1]["gpus"][gpu]["health"].startswith("quarantined")
    else:
        broken = lambda p: p.call("GET", f"/v1/nodes/{node}")[1].get("state") == "down"
    t_down, t_moved, j = watch_failover(pool, jid, t_break, broken)
    c.check(t_down is not None, f"{name}: {'GPU quarantined' if how == 'xid' else 'node ' + node + ' declared down'}")
    c.check(t_moved is not None, f"{name}: job placed again and running ({j['state']}, attempt {j['attempt']}, {j['message']})")
    if t_down is None or t_moved is None:
        return None
    detect, replace = t_down - t_break, t_moved - t_down
    what = f"GPU {gpu} quarantined" if how == "xid" else "detected down"
    print(f"{name}: {how} {node}: {what} after {detect:.2f} s, running again on {j['node']} "
          f"{replace:.2f} s later (attempt {j['attempt']})", flush=True)
    if how == "xid":
        c.check(j["node"] != node or gpu not in j["gpus"], f"{name}: moved off GPU {gpu} of {node}")
    else:
        c.check(j["node"] != node, f"{name}: moved off {node}")
    c.check(detect <= 2.5, f"{name}: detection took {detect:.2f} s (target 2 s)")
    c.check(replace <= 1.5, f"{name}: re-placement took {replace:.2f} s after detection (target 1 s)")
    if how == "hang":
        os.killpg(victim.pid, signal.SIGCONT)  # the agent comes back; its node rejoins
        time.sleep(1.5)
        status, n = pool.call("GET", f"/v1/nodes/{node}")
        c.check(n.get("state") == "ready", f"{name}: {node} is back ({n.get('state')})")
    time.sleep(0.5)
    open(f"{out}/{name}.stop", "w").close()
    final = pool.wait_jobs([jid], timeout=20)[jid]
    c.check(final["state"] == "succeeded", f"{name}: the job ends once ({final['state']}: {final['message']})")
    starts = [line.split() for line in open(f"{out}/{name}.starts")]
    c.check([s[0] for s in starts] == ["1", "2"], f"{name}: attempts started {[s[0] for s in starts]}")
    last_a1 = float(open(f"{out}/{name}.a1").read())
    start_a2 = float(starts[1][2])
    c.check(last_a1 < start_a2, f"{name}: attempt 1 was last alive {last_a1 - start_a2:+.2f} s from attempt 2's start")
    print(f"{name}: attempt 1 last alive {start_a2 - last_a1:.2f} s before attempt 2 started", flush=True)
    seen = starts[1][3] if len(starts) > 1 and len(starts[1]) > 3 else "?"
    c.check(seen == "1,2", f"{name}: attempt 2 on {starts[1][1] if len(starts) > 1 else '?'} found attempt 1's checkpoint ({seen})")
    return detect, replace


def restart_scenario(pool, c, out, agents):
    """SIGKILL only the agent process and start a new one at once, same name, same work
    directory: it adopts the running task (its supervisor lives on); the job keeps attempt 1."""
    name = "adopt"
    jid = pool.submit(["sh", "-c", JOB.format(out=out, name=name)], gpus=2, name=name)
    node = wait_running(pool, jid)["node"]
    time.sleep(0.5)
    os.kill(agents[node].pid, signal.SIGKILL)  # the agent alone; its tasks' supervisors live on
    agents[node] = pool.start_agent(node, "2xH100", interval="500ms", extra=pool.agent_extra)
    time.sleep(3.0)  # past detection and past the lease: the adopted task must still be there
    j = job_state(pool, jid)
    c.check(j["attempt"] == 1 and j["state"] == "running", f"{name}: adopted, not moved ({j['state']}, attempt {j['attempt']}, {j['message']})")
    status, n = pool.call("GET", f"/v1/nodes/{node}")
    c.check(n.get("state") == "ready", f"{name}: {node} is ready ({n.get('state')})")
    open(f"{out}/{name}.stop", "w").close()
    final = pool.wait_jobs([jid], timeout=20)[jid]
    c.check(final["state"] == "succeeded" and final["attempt"] == 1, f"{name}: ended once, attempt 1 ({final['state']})")
    starts = [line.split()[0] for line in open(f"{out}/{name}.starts")]
    c.check(starts == ["1"], f"{name}: started {starts}")
    print(f"{name}: agent on {node} killed and restarted; its running task was adopted, attempt 1 ended normally", flush=True)


class Netns:
    """A network namespace of this test's own, joined to the host by a veth pair on a /30."""

    def __init__(self):
        n = os.getpid() % 250 + 1
        self.ns, self.host, self.peer = f"gpcut{n}", f"gpch{n}", f"gpca{n}"
        self.host_ip, self.peer_ip = f"10.231.{n}.1", f"10.231.{n}.2"
        self.ok = False

    def run(self, *cmd):
        return subprocess.run(cmd, capture_output=True, text=True).returncode == 0

    def up(self):
        if os.geteuid() != 0 or not self.run("ip", "-V"):
            return "needs root and iproute2"
        steps = [("ip", "netns", "add", self.ns),
                 ("ip", "link", "add", self.host, "type", "veth", "peer", "name", self.peer),
                 ("ip", "link", "set", self.peer, "netns", self.ns),
                 ("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host),
                 ("ip", "link", "set", self.host, "up"),
                 ("ip", "netns", "exec", self.ns, "ip", "addr", "add", f"{self.peer_ip}/30", "dev", self.peer),
                 ("ip", "netns", "exec", self.ns, "ip", "link", "set", self.peer, "up"),
                 ("ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up")]
        for step in steps:
            if not self.run(*step):
                self.down()
                return "could not set up: " + " ".join(step)
        self.ok = True
        return None

    def cut(self, on):
        self.run("ip", "link", "set", self.host, "down" if on else "up")

    def down(self):
        self.run("ip", "netns", "del", self.ns)
        self.run("ip", "link", "del", self.host)


def netcut_scenario(pool, c, out, agents, net):
    name = "netcut"
    for n in ("a", "b", "c"):
        pool.call("POST", f"/v1/nodes/{n}/drain")
    pool.call("POST", "/v1/nodes/cut/undrain")
    jid = pool.submit(["sh", "-c", JOB.format(out=out, name=name)], gpus=2, name=name)
    c.check(wait_running(pool, jid)["node"] == "cut", f"{name}: the job runs on the namespaced node")
    for n in ("a", "b", "c"):
        pool.call("POST", f"/v1/nodes/{n}/undrain")
    time.sleep(1.0)
    t_break = time.time()
    net.cut(True)
    t_down, t_moved, j = watch_failover(pool, jid, t_break,
                                        lambda p: p.call("GET", "/v1/nodes/cut")[1].get("state") == "down")
    ok = t_down is not None and t_moved is not None
    c.check(ok, f"{name}: moved ({j['state']}, attempt {j['attempt']}, {j['message']})")
    if not ok:
        print(pool.call("GET", f"/v1/jobs/{jid}/explain")[1].get("explain"), flush=True)
        jj = job_state(pool, jid)
        print({k: jj[k] for k in ("state", "attempt", "failures", "not_before_ms", "fence_until_ms", "failing_over", "submit_ms")},
              int(time.time() * 1000), flush=True)
        print([(n["name"], n["state"], n["free_gpus"]) for n in pool.call("GET", "/v1/nodes")[1]["nodes"]], flush=True)
    if t_down and t_moved:
        print(f"{name}: link cut: detected down after {t_down - t_break:.2f} s, running again on {j['node']} "
              f"{t_moved - t_down:.2f} s later (attempt {j['attempt']})", flush=True)
    net.cut(False)
    time.sleep(2.5)
    c.check(pool.call("GET", "/v1/nodes/cut")[1].get("state") == "ready", f"{name}: the node is back after the link returns")
    open(f"{out}/{name}.stop", "w").close()
    final = pool.wait_jobs([jid], timeout=20)[jid]
    c.check(final["state"] == "succeeded", f"{name}: the job ends once ({final['state']})")
    starts = [line.split() for line in open(f"{out}/{name}.starts")]
    c.check([x[0] for x in starts] == ["1", "2"], f"{name}: attempts started {[x[0] for x in starts]}")
    last_a1 = float(open(f"{out}/{name}.a1").read())
    c.check(last_a1 < float(starts[1][2]), f"{name}: the cut-off attempt stopped before the new one started")
    print(f"{name}: the cut-off attempt stopped itself {float(starts[1][2]) - last_a1:.2f} s before attempt 2 started", flush=True)
    return (t_down - t_break, t_moved - t_down) if t_down and t_moved else None


CKPT_JOB = ('D="$GPUPOOL_CHECKPOINT_DIR"; mkdir -p "$D"; n=$(cat "$D/progress" 2>/dev/null || echo 0); '
            'echo "$GPUPOOL_ATTEMPT $n $GPUPOOL_NODE" >> {out}/{name}.starts; '
            "trap 'echo $n > \"$D/progress\"; exit 0' TERM; "
            'while [ $n -lt 80 ]; do n=$((n+1)); sleep 0.05; done')


def reclaim_scenario(pool, c, out):
    """A provider reclaims a spot node with notice: the job saves its progress on SIGTERM in
    GPUPOOL_CHECKPOINT_DIR, moves, and resumes from there; it is not counted as a failure."""
    name = "reclaim"
    for n in pool.call("GET", "/v1/nodes")[1]["nodes"]:  # earlier scenarios quarantined a GPU
        for g in n["gpus"]:
            pool.call("POST", f"/v1/nodes/{n['name']}/gpus/{g['index']}/undrain")
    jid = pool.submit(["sh", "-c", CKPT_JOB.format(out=out, name=name)], gpus=2, name=name)
    node = wait_running(pool, jid)["node"]
    time.sleep(1.5)  # some progress first
    status, _ = pool.call("POST", f"/v1/nodes/{node}/reclaim", {"notice": "3s"})
    c.check(status == 200, f"{name}: reclaim accepted")
    final = pool.wait_jobs([jid], timeout=30)[jid]
    starts = [line.split() for line in open(f"{out}/{name}.starts")]
    c.check(final["state"] == "succeeded" and final["attempt"] == 2, f"{name}: ended on attempt 2 ({final['state']}, {final['attempt']})")
    c.check(final["failures"] == 0, f"{name}: a reclaim is not a failure ({final['failures']})")
    c.check(len(starts) == 2 and int(starts[1][1]) > 0 and starts[1][2] != node,
            f"{name}: attempt 2 resumed from the checkpoint on another node ({starts})")
    print(f"{name}: {node} reclaimed with 3 s notice; the job saved progress {starts[1][1] if len(starts) > 1 else '?'}/80 "
          f"and resumed on {starts[1][2] if len(starts) > 1 else '?'}", flush=True)


def selftest_scenario(pool, c, out):
    """`gpupool gpu check`: the agent self-tests a quarantined GPU (here with the command given
    by --gpu-selftest, which fails while a file exists); a failure keeps it out, a pass puts it
    back in service."""
    name = "selftest"
    node = next(n["name"] for n in pool.call("GET", "/v1/nodes")[1]["nodes"] if n["state"] == "ready" and n["name"] != "cut")
    gpu = 1
    status, _ = pool.call("POST", f"/v1/nodes/{node}/gpus/{gpu}/check")
    c.check(status == 409, f"{name}: a GPU in service is not self-tested ({status})")
    pool.call("POST", f"/v1/nodes/{node}/gpus/{gpu}/xid", {"xid": 79})

    def check():
        before = pool.call("GET", f"/v1/nodes/{node}")[1]["gpus"][gpu].get("check", "")
        status, _ = pool.call("POST", f"/v1/nodes/{node}/gpus/{gpu}/check")
        c.check(status == 202, f"{name}: check accepted ({status})")
        deadline = time.time() + 10
        while time.time() < deadline:
            g = pool.call("GET", f"/v1/nodes/{node}")[1]["gpus"][gpu]
            if g.get("check", "") not in ("", before):
                return g
            time.sleep(0.05)
        return pool.call("GET", f"/v1/nodes/{node}")[1]["gpus"][gpu]

    open(f"{out}/selftest-fail", "w").close()
    g = check()
    c.check(g.get("check", "").startswith("failed") and "memory test failed on GPU 1" in g.get("check", ""),
            f"{name}: the failing test is reported ({g.get('check')})")
    c.check(g["health"].startswith("quarantined"), f"{name}: still quarantined after a failed test ({g['health']})")
    os.remove(f"{out}/selftest-fail")
    g = check()
    c.check(g.get("check", "").startswith("passed"), f"{name}: the test passes ({g.get('check')})")
    c.check(g["health"] == "ok", f"{name}: back in service after a pass ({g['health']})")
    print(f"{name}: GPU {gpu} of {node}: failed self-test kept it out, a passing one put it back ({g.get('check')})", flush=True)


def main(gpupool):
    c = Checks()
    pool = Pool(gpupool)
    net = Netns()
    why_not = net.up()
    try:
        if net.ok:
            pool.start_server("--also-listen", f"{net.host_ip}:{pool.port}")
        else:
            pool.start_server()
        # The default heartbeat interval, 0.5 s: the figures are for what a user gets.
        out = os.path.join(pool.dir, "faults")
        pool.shared_dir(out)
        # Checkpoints are looked at every 200 ms (5 s by default), so that attempt 1's is shipped
        # before its node is broken a second in.
        selftest = (f'if [ -e {out}/selftest-fail ]; then echo "memory test failed on GPU $GPUPOOL_SELFTEST_GPU"; exit 1; fi; '
                    'echo "GPU $GPUPOOL_SELFTEST_GPU ($GPUPOOL_SELFTEST_UUID) checked"')
        extra = pool.agent_extra = ("--checkpoint-sync", "200ms", "--gpu-selftest", selftest)
        agents = {n: pool.start_agent(n, "2xH100", interval="500ms", extra=extra) for n in ("a", "b", "c")}
        if net.ok:
            agents["cut"] = pool.start_agent("cut", "2xH100", interval="500ms", server=f"https://{net.host_ip}:{pool.port}",
                                             prefix=("ip", "netns", "exec", net.ns), extra=extra)
            pool.wait_nodes(4)
            pool.call("POST", "/v1/nodes/cut/drain")  # only its own scenario uses it
        else:
            pool.wait_nodes(3)
        results = []
        for name, how in (("kill", "kill"), ("hang", "hang"), ("xid", "xid")):
            r = scenario(pool, c, out, name, agents, how)
            if r and how != "xid":  # node failures; an XID is known the moment it is reported
                results.append(r)
        restart_scenario(pool, c, out, agents)
        if net.ok:
            r = netcut_scenario(pool, c, out, agents, net)
            if r:
                results.append(r)
        reclaim_scenario(pool, c, out)
        selftest_scenario(pool, c, out)
        if results:
            d = sorted(r[0] for r in results)
            p = sorted(r[1] for r in results)
            print(f"node failures: detection median {d[len(d) // 2]:.2f} s, worst {d[-1]:.2f} s; "
                  f"re-placement after detection: median {p[len(p) // 2]:.2f} s, worst {p[-1]:.2f} s")
        if not net.ok:
            print(f"skipped: network cut: network namespaces not available here ({why_not})")
    finally:
        for p in pool.agents:
            try:
                os.killpg(p.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        pool.stop()
        if net.ok:
            net.down()
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
