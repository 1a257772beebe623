"""TLS end to end, on real processes and sockets.

- The server makes its CA on first start; the join token carries the CA's public-key hash, the
  one `openssl` computes for the same certificate (kubeadm's discovery hash).
- The CLI over https:// with the pool's CA works; without a CA, or with another one, it fails
  and says why.
- Plain HTTP from another host is turned away saying to use HTTPS; HTTPS from there works.
- An agent whose join token's CA hash does not match the server's refuses to join; an agent told
  to speak plain HTTP to another host refuses too.
- Mutual TLS: agents get client certificates at registration; over TLS a node's request without
  its certificate, or with another node's, is refused; over loopback plain HTTP it is not.
- A revoked certificate is refused (and the agent registers again for a new one, its running
  job untouched); an expired one is refused saying so.
- With short-lived certificates, agents rotate them before they expire while a job runs: the
  job ends in its first attempt and the node never leaves "ready"."""
import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import time

from pool import Checks, Pool, free_port


def other_address():
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    for a in out:
        if "." in a and not a.startswith("127."):
            return a
    return None


def https(port, method, path, token=None, ca=None, cert=None, host="127.0.0.1", body=None):
    """(status, text) of one request over TLS, presenting `cert` = (crt, key) if given."""
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(*cert)
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    r = conn.getresponse()
    text = r.read().decode(errors="replace")
    conn.close()
    return r.status, text


def plain(host, port, method, path, token=None):
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request(method, path, headers={"Authorization": f"Bearer {token}"} if token else {})
    r = conn.getresponse()
    text = r.read().decode(errors="replace")
    conn.close()
    return r.status, text


def wait_for(pred, timeout=20, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


def serial_of(crt):
    out = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", crt], capture_output=True, text=True)
    return out.stdout.strip().split("=", 1)[-1]


def cli(gpupool, args, env):
    return subprocess.run([gpupool, *args], capture_output=True, text=True, timeout=30, env=env)


def main(gpupool):
    gpupool = os.path.abspath(gpupool)
    c = Checks()
    ip = other_address()
    pool = Pool(gpupool)
    wide = free_port()
    try:
        extra = ("--also-listen", f"{ip}:{wide}") if ip else ()
        pool.start_server(*extra)
        sdir = f"{pool.dir}/server"
        ca = f"{sdir}/tls/ca.crt"
        c.check(os.path.exists(ca) and os.path.exists(f"{sdir}/tls/ca.key"), "the server made its CA in DATA_DIR/tls")
        c.check(oct(os.stat(f"{sdir}/tls/ca.key").st_mode & 0o777) == "0o600", "the CA's key is 0600")
        join = open(f"{sdir}/join.token").read().strip()
        secret, _, pin = join.partition(".")
        # The hash as openssl computes it: SHA-256 of the CA's SubjectPublicKeyInfo (DER).
        pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", ca], capture_output=True).stdout
        der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, capture_output=True).stdout
        digest = subprocess.run(["sha256sum"], input=der, capture_output=True, text=False).stdout.split()[0].decode()
        c.check(pin == f"sha256:{digest}", f"the join token carries the CA's hash as openssl computes it ({pin[:20]}...)")

        # --- the CLI ---
        home = os.path.join(pool.dir, "home")
        os.makedirs(home, exist_ok=True)
        env = dict(os.environ, HOME=home, GPUPOOL_TOKEN=pool.token)
        env.pop("GPUPOOL_CA", None)
        addr = f"https://127.0.0.1:{pool.port}"
        r = cli(gpupool, ["nodes", "--server", addr, "--ca", ca], env)
        c.check(r.returncode == 0, f"the CLI with the pool's CA works over https ({r.returncode}: {r.stderr.strip()[:200]})")
        r = cli(gpupool, ["nodes", "--server", addr], env)
        c.check(r.returncode != 0 and "CA" in r.stderr, f"... without a CA it fails, saying so: {r.stderr.strip()[:200]}")
        other = os.path.join(pool.dir, "other-ca")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                        "-subj", "/CN=not the pool", "-keyout", other + ".key", "-out", other + ".crt"],
                       capture_output=True, check=True)
        r = cli(gpupool, ["nodes", "--server", addr, "--ca", other + ".crt"], env)
        c.check(r.returncode != 0 and "TLS" in r.stderr, f"... with another CA it fails: {r.stderr.strip()[:200]}")
        os.makedirs(f"{home}/.config/gpupool", exist_ok=True)
        with open(f"{home}/.config/gpupool/config", "w") as f:
            f.write(f"server = {addr}\nca = {ca}\n")
        r = cli(gpupool, ["jobs"], env)
        c.check(r.returncode == 0, f"... and with server and ca in ~/.config/gpupool/config ({r.stderr.strip()[:200]})")

        # --- the dashboard, over HTTPS on the same port ---
        status, text = https(pool.port, "GET", "/", ca=ca)
        c.check(status == 200 and "<html" in text.lower(), f"the dashboard's page is served over HTTPS ({status})")

        # --- from another host's address ---
        os.chmod(pool.dir, 0o711)
        if ip:
            status, text = plain(ip, wide, "GET", "/v1/health", pool.token)
            c.check(status == 400 and "https://" in text and "--insecure-http" in text,
                    f"plain HTTP to {ip} is turned away, saying to use HTTPS ({status}: {text[:160]})")
            status, _ = https(wide, "GET", "/v1/health", pool.token, ca=ca, host=ip)
            c.check(status == 200, f"HTTPS to {ip} works (its certificate names the address): {status}")
            bad = subprocess.run(
                [gpupool, "agent", "--server", f"{ip}:{wide}", "--join-token", join, "--simulate-gpus", "1xH100", "--name", "clear",
                 "--work-dir", f"{pool.dir}/agents/clear", "--metrics-listen", "off"], capture_output=True, text=True, timeout=30)
            c.check(bad.returncode != 0 and "in clear" in bad.stderr,
                    f"an agent told to speak plain HTTP to {ip} refuses: {bad.stderr.strip()[:200]}")
        else:
            print("note: this host has no address but loopback; the other-host checks did not run")

        os.chmod(pool.dir, 0o711)  # agents as root run tasks as nobody, who must pass through
        # --- a join token whose CA hash is not the server's ---
        wrong = secret + ".sha256:" + "0" * 64
        bad = subprocess.run(
            [gpupool, "agent", "--server", addr, "--join-token", wrong, "--simulate-gpus", "1xH100", "--name", "impostor",
             "--work-dir", f"{pool.dir}/agents/impostor", "--metrics-listen", "off"], capture_output=True, text=True, timeout=30)
        c.check(bad.returncode != 0 and "not joining" in bad.stderr,
                f"an agent whose join token's CA hash does not match refuses to join: {bad.stderr.strip()[:240]}")
        names = [n["name"] for n in pool.call("GET", "/v1/nodes")[1]["nodes"]]
        c.check("impostor" not in names, "... and never registered")

        # --- mutual TLS ---
        pool.start_agent("alpha", "2xH100", server=addr)
        pool.start_agent("beta", "2xH100", server=addr)
        pool.wait_nodes(2)
        a_dir, b_dir = f"{pool.dir}/agents/alpha", f"{pool.dir}/agents/beta"
        c.check(wait_for(lambda: os.path.exists(f"{a_dir}/node.crt") and os.path.exists(f"{b_dir}/node.crt")),
                "each agent keeps the client certificate it was issued")
        c.check(subprocess.run(["openssl", "verify", "-CAfile", ca, f"{a_dir}/node.crt"], capture_output=True).returncode == 0,
                "openssl verifies alpha's certificate against the pool's CA")
        subj = subprocess.run(["openssl", "x509", "-noout", "-subject", "-in", f"{a_dir}/node.crt"], capture_output=True, text=True).stdout
        c.check("CN = alpha" in subj, f"... and it names the node: {subj.strip()}")
        a_cred, b_cred = pool.credential("alpha"), pool.credential("beta")
        a_cert = (f"{a_dir}/node.crt", f"{a_dir}/node.key")
        probe = "/v1/agent/checkpoints/999/0"  # an agent endpoint that changes nothing
        status, text = https(pool.port, "GET", probe, b_cred, ca=ca, cert=a_cert)
        c.check(status == 403 and "alpha" in text and "beta" in text,
                f"alpha's certificate with beta's credential cannot act as beta ({status}: {text[:160]})")
        status, text = https(pool.port, "GET", probe, a_cred, ca=ca)
        c.check(status == 401 and "client certificate" in text, f"over TLS without a certificate: refused ({status}: {text[:160]})")
        status, text = https(pool.port, "GET", probe, a_cred, ca=ca, cert=a_cert)
        c.check(status == 404, f"alpha's certificate with alpha's credential gets through ({status}: {text[:120]})")
        status, text = plain("127.0.0.1", pool.port, "GET", probe, a_cred)
        c.check(status == 404, f"over loopback plain HTTP the credential alone still works ({status})")

        # --- revocation, with a job running on the node ---
        job = pool.submit(["sleep", "6"], gpus=2, name="steady")
        c.check(wait_for(lambda: pool.call("GET", f"/v1/jobs/{job}")[1].get("state") == "running"), "a job runs")
        node_of = pool.call("GET", f"/v1/jobs/{job}")[1]["placement"][0]["node"]
        ndir = f"{pool.dir}/agents/{node_of}"
        saved = (f"{pool.dir}/revoked.crt", f"{pool.dir}/revoked.key")
        shutil.copy(f"{ndir}/node.crt", saved[0])
        shutil.copy(f"{ndir}/node.key", saved[1])
        old_serial = serial_of(saved[0])
        r = cli(gpupool, ["revoke-certs", node_of], env)
        c.check(r.returncode == 0, f"gpupool revoke-certs {node_of} ({r.stderr.strip()[:160]})")
        cred = pool.credential(node_of)
        status, text = https(pool.port, "GET", probe, cred, ca=ca, cert=saved)
        c.check(status == 401 and "not in force" in text, f"the revoked certificate is refused ({status}: {text[:160]})")
        c.check(wait_for(lambda: serial_of(f"{ndir}/node.crt") != old_serial, timeout=15),
                "the agent registered again and holds a new certificate")
        status, _ = https(pool.port, "GET", probe, cred, ca=ca, cert=(f"{ndir}/node.crt", f"{ndir}/node.key"))
        c.check(status == 404, f"... which is accepted ({status})")
        jobs = pool.wait_jobs([job], timeout=30)
        c.check(jobs[job]["state"] == "succeeded" and len(jobs[job].get("attempts", [1])) <= 1,
                f"the running job was not disturbed ({jobs[job]['state']}, {len(jobs[job].get('attempts', []))} attempts)")
        revoked = [e for e in pool.all_events() if e["type"] == "io.gpupool.node.certificates_revoked"]
        c.check(revoked and revoked[0]["data"].get("actor", {}).get("kind") == "admin",
                f"the revocation is an event naming its actor: {revoked[:1]}")
    finally:
        pool.stop()

    # --- rotation and expiry: certificates of 12 s, while a job runs ---
    pool = Pool(gpupool)
    try:
        pool.start_server("--node-cert-ttl", "12s")
        sdir = f"{pool.dir}/server"
        ca = f"{sdir}/tls/ca.crt"
        addr = f"https://127.0.0.1:{pool.port}"
        log = open(f"{pool.dir}/agent.log", "w")
        pool.start_agent("gamma", "1xH100", server=addr, stderr=log)
        pool.wait_nodes(1)
        gdir = f"{pool.dir}/agents/gamma"
        wait_for(lambda: os.path.exists(f"{gdir}/node.crt"))
        first = (f"{pool.dir}/first.crt", f"{pool.dir}/first.key")
        shutil.copy(f"{gdir}/node.crt", first[0])
        shutil.copy(f"{gdir}/node.key", first[1])
        serials = {serial_of(first[0])}
        job = pool.submit(["sh", "-c", "for i in $(seq 25); do echo tick $i; sleep 1; done"], gpus=1, name="long")
        down = False
        deadline = time.time() + 40
        while time.time() < deadline:
            s = serial_of(f"{gdir}/node.crt")
            if s:
                serials.add(s)
            node = pool.call("GET", "/v1/nodes/gamma")[1]
            down = down or node.get("state") != "ready"
            if pool.call("GET", f"/v1/jobs/{job}")[1].get("state") in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.5)
        jobs = pool.wait_jobs([job], timeout=30)
        c.check(len(serials) >= 3, f"the agent rotated its certificate before each expired ({len(serials)} certificates in ~25 s)")
        log.flush()
        c.check("rotated" in open(f"{pool.dir}/agent.log").read(), "... saying so in its log")
        c.check(jobs[job]["state"] == "succeeded" and len(jobs[job].get("attempts", [1])) <= 1,
                f"the job ran through every rotation in its first attempt ({jobs[job]['state']})")
        logs = pool.call("GET", f"/v1/jobs/{job}/logs?task=0&stream=stdout")[1]
        c.check(isinstance(logs, str) and "tick 25" in logs, "... with all its output")
        c.check(not down, "the node stayed ready throughout")
        cred = pool.credential("gamma")
        status, text = https(pool.port, "GET", "/v1/agent/checkpoints/999/0", cred, ca=ca, cert=first)
        c.check(status == 401 and "expired" in text, f"the first certificate, now expired, is refused ({status}: {text[:160]})")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
