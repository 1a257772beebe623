"""A Python client for gpupool's REST API (docs/api.md), on the standard library alone.

    from gpupool_client import Client
    c = Client("https://127.0.0.1:7070", token="...", ca="DATA_DIR/tls/ca.crt")
    job = c.submit(["python", "train.py"], gpus=2)
    c.wait(job.id)

The address, token and CA default to GPUPOOL_ADDR, GPUPOOL_TOKEN and GPUPOOL_CA, as the CLI's.
"""
from __future__ import annotations

import dataclasses
import http.client
import json
import os
import ssl
import time
import urllib.parse
from typing import Any, Dict, Iterator, List, Optional

__all__ = ["Client", "Job", "Node", "Event", "GpupoolError"]

# The fields of a submission (POST /v1/jobs), as keywords of Client.submit.
JOB_FIELDS = ("gpus", "tasks", "gpu_model", "gpu_memory", "cpu", "memory", "priority", "tenant", "name", "data",
              "duration", "time", "max_price", "max_retries", "env", "secrets", "workdir", "array", "dependency",
              "driver", "image", "rootfs", "read_only_root")
TERMINAL = ("succeeded", "failed", "cancelled", "timed-out")


class GpupoolError(Exception):
    """The server refused (status: its HTTP status; 0 when it could not be reached)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{message} (HTTP {status})" if status else message)
        self.status = status
        self.message = message


@dataclasses.dataclass
class Job:
    id: str
    name: str
    state: str
    command: List[str]
    tasks: int
    gpus_per_task: int
    tenant: str
    node: Optional[str]
    gpus: List[int]
    exit_code: Optional[int]
    signal: Optional[int]
    message: str
    submit_ms: int
    start_ms: int
    end_ms: int
    raw: Dict[str, Any] = dataclasses.field(repr=False)

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    @classmethod
    def of(cls, d: Dict[str, Any]) -> "Job":
        return cls(id=str(d["id"]), name=d.get("name", ""), state=d.get("state", ""), command=d.get("command", []),
                   tasks=d.get("tasks", 1), gpus_per_task=d.get("gpus_per_task", 0), tenant=d.get("tenant", ""),
                   node=d.get("node"), gpus=d.get("gpus", []), exit_code=d.get("exit_code"), signal=d.get("signal"),
                   message=d.get("message", ""), submit_ms=d.get("submit_ms", 0), start_ms=d.get("start_ms", 0),
                   end_ms=d.get("end_ms", 0), raw=d)


@dataclasses.dataclass
class Node:
    name: str
    state: str
    model: str
    gpus: int
    free: int
    site: str
    provider: str
    drivers: List[str]
    raw: Dict[str, Any] = dataclasses.field(repr=False)

    @classmethod
    def of(cls, d: Dict[str, Any]) -> "Node":
        gpus = d.get("gpus", [])
        return cls(name=d.get("name", ""), state=d.get("state", ""), model=d.get("model", ""),
                   gpus=len(gpus) if isinstance(gpus, list) else int(gpus), free=d.get("free_gpus", 0),
                   site=d.get("site", ""), provider=d.get("provider", ""), drivers=d.get("drivers", ["process"]), raw=d)


@dataclasses.dataclass
class Event:
    sequence: int
    type: str       # "job.succeeded" (the CloudEvent's "io.gpupool." taken off)
    subject: str
    time: str
    data: Dict[str, Any]
    raw: Dict[str, Any] = dataclasses.field(repr=False)

    @classmethod
    def of(cls, d: Dict[str, Any]) -> "Event":
        t = d.get("type", "")
        return cls(sequence=int(d["sequence"]), type=t[len("io.gpupool."):] if t.startswith("io.gpupool.") else t,
                   subject=d.get("subject", ""), time=d.get("time", ""), data=d.get("data", {}), raw=d)


class Client:
    def __init__(self, addr: Optional[str] = None, token: Optional[str] = None, ca: Optional[str] = None,
                 timeout: float = 30.0):
        addr = addr or os.environ.get("GPUPOOL_ADDR") or "127.0.0.1:7070"
        self.token = token if token is not None else os.environ.get("GPUPOOL_TOKEN", "")
        ca = ca or os.environ.get("GPUPOOL_CA") or None
        self.tls = addr.startswith("https://")
        hostport = addr.split("://", 1)[-1].rstrip("/").split(",")[0]
        self.host, _, port = hostport.rpartition(":")
        if not self.host or not port.isdigit():
            raise ValueError(f"addr: expected [https://]HOST:PORT, got {addr!r}")
        self.port = int(port)
        self.timeout = timeout
        self._ctx = None
        if self.tls:
            if not ca:
                raise ValueError("an https:// server needs the pool's CA: ca=PATH or GPUPOOL_CA (the server's DATA_DIR/tls/ca.crt)")
            self._ctx = ssl.create_default_context(cafile=ca)
        self._conn: Optional[http.client.HTTPConnection] = None

    # --- transport ---

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.tls:
                self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self._ctx)
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        self._conn.timeout = timeout
        if self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _request(self, method: str, path: str, body: Any = None, timeout: Optional[float] = None):
        """(status, headers, bytes); a kept-alive connection that closed is opened again once."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in range(2):
            reused = self._conn is not None and self._conn.sock is not None
            conn = self._connection(timeout or self.timeout)
            try:
                conn.request(method, path, body=data, headers=headers)
                r = conn.getresponse()
                payload = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self._close()
                return r.status, r, payload
            except (OSError, http.client.HTTPException) as e:
                self._close()
                # A kept-alive connection the server closed (it restarted, or timed it out): the
                # request never reached it; once more on a fresh one. Anything else is an error.
                if reused and attempt == 0 and not isinstance(e, (TimeoutError, ssl.SSLCertVerificationError)):
                    continue
                raise GpupoolError(0, f"{method} {path}: cannot reach the server at {self.host}:{self.port}: {e}") from e
        raise GpupoolError(0, "unreachable")

    def _json(self, method: str, path: str, body: Any = None, timeout: Optional[float] = None) -> Any:
        status, _, payload = self._request(method, path, body, timeout)
        text = payload.decode(errors="replace")
        if status // 100 != 2:
            try:
                message = json.loads(text).get("error", text)
            except ValueError:
                message = text
            raise GpupoolError(status, message)
        return json.loads(text) if text else {}

    # --- jobs ---

    def submit(self, command, **fields) -> Job:
        """Submits a job (every field of POST /v1/jobs as a keyword); the job as the server has it."""
        unknown = set(fields) - set(JOB_FIELDS)
        if unknown:
            raise TypeError(f"submit: unknown field(s) {sorted(unknown)}; the fields are {', '.join(JOB_FIELDS)}")
        body = {"command": command if isinstance(command, (list, str)) else list(command)}
        body.update({k: v for k, v in fields.items() if v is not None})
        job_id = self._json("POST", "/v1/jobs", body)["id"]
        return self.job(job_id)

    def job(self, job_id) -> Job:
        return Job.of(self._json("GET", f"/v1/jobs/{job_id}"))

    def jobs(self, state: Optional[str] = None, tenant: Optional[str] = None, limit: Optional[int] = None) -> List[Job]:
        """Jobs, newest first, read page by page (up to `limit`)."""
        out: List[Job] = []
        before = None
        while True:
            q = {k: v for k, v in (("state", state), ("tenant", tenant), ("before", before)) if v}
            page = self._json("GET", "/v1/jobs?" + urllib.parse.urlencode(q))
            out += [Job.of(j) for j in page.get("jobs", [])]
            before = page.get("next")
            if not before or (limit and len(out) >= limit):
                return out[:limit] if limit else out

    def cancel(self, job_id) -> None:
        self._json("POST", f"/v1/jobs/{job_id}/cancel")

    def explain(self, job_id) -> str:
        return self._json("GET", f"/v1/jobs/{job_id}/explain").get("explain", "")

    def wait(self, job_id, timeout: Optional[float] = None, poll: float = 0.25) -> Job:
        """Waits for the job to end; raises TimeoutError past `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            j = self.job(job_id)
            if j.done:
                return j
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {j.state} after {timeout} s")
            time.sleep(poll)

    def logs(self, job_id, task: int = 0, stream: str = "stdout", follow: bool = False, poll: float = 0.25) -> Iterator[str]:
        """A task's output as it comes, in chunks; with `follow`, until the job has ended and
        everything it wrote has been read."""
        offset = 0
        while True:
            path = f"/v1/jobs/{job_id}/logs?" + urllib.parse.urlencode({"task": task, "stream": stream, "offset": offset})
            status, _, payload = self._request("GET", path)
            if status // 100 != 2:
                text = payload.decode(errors="replace")
                try:
                    text = json.loads(text).get("error", text)
                except ValueError:
                    pass
                raise GpupoolError(status, text)
            if payload:
                offset += len(payload)
                yield payload.decode(errors="replace")
                continue
            if not follow or self.job(job_id).done:
                # One more look: what it wrote just before it ended.
                status, _, payload = self._request("GET", path)
                if status // 100 == 2 and payload:
                    offset += len(payload)
                    yield payload.decode(errors="replace")
                    continue
                return
            time.sleep(poll)

    # --- nodes and events ---

    def nodes(self) -> List[Node]:
        out: List[Node] = []
        after = None
        while True:
            page = self._json("GET", "/v1/nodes" + (f"?after={urllib.parse.quote(after)}" if after else ""))
            out += [Node.of(n) for n in page.get("nodes", [])]
            after = page.get("next")
            if not after:
                return out

    def events(self, since: int = 0, follow: bool = True, wait: str = "30s", retry: float = 0.5) -> Iterator[Event]:
        """The event log after `since`, oldest first. With `follow`, it waits for more (long
        polls) and, when the server goes away (a restart, a change of leader), goes on asking
        from the last sequence it yielded: nothing is missed or given twice."""
        while True:
            q = {"since": since, "limit": 1000}
            if follow:
                q["wait"] = wait
            try:
                status, _, payload = self._request("GET", "/v1/events?" + urllib.parse.urlencode(q), timeout=self.timeout + 300)
            except GpupoolError:
                if not follow:
                    raise
                time.sleep(retry)
                continue
            if status == 410:
                raise GpupoolError(status, payload.decode(errors="replace"))
            if status // 100 != 2:
                if not follow or status < 500:
                    raise GpupoolError(status, payload.decode(errors="replace"))
                time.sleep(retry)
                continue
            page = [json.loads(line) for line in payload.decode().splitlines() if line.strip()]
            for e in page:
                ev = Event.of(e)
                since = ev.sequence
                yield ev
            if not page and not follow:
                return
