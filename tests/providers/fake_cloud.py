#!/usr/bin/env python3
"""A provider program for gpupool's `exec` provisioner contract (docs/providers.md) whose
"cloud" is a JSON file: `fake_cloud.py --state FILE VERB`, the request on standard input, the
answer on standard output. The tests steer it through the same file: `stockout` (offer names
that answer capacity errors, scope zone, retry after `stockout_retry_s`, 300 s by default),
`quota_gpus` (GPUs held at once
before quota errors), `interruptions` (instance -> deadline in ms), `hang` (never answer),
`garbage` (answer something that is not JSON), `offers` (what its `offers` verb states). Every create is logged in `creates` with its
offer, its wall-clock time and its outcome. Standard library only."""
import fcntl
import json
import sys
import time


def main():
    args = sys.argv[1:]
    if len(args) != 3 or args[0] != "--state":
        print("usage: fake_cloud.py --state FILE VERB", file=sys.stderr)
        return 2
    path, verb = args[1], args[2]
    request = json.loads(sys.stdin.read() or "{}")
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read()
        state = json.loads(text) if text.strip() else {}
        state.setdefault("next_id", 1)
        state.setdefault("instances", {})
        state.setdefault("calls", [])
        state["calls"].append(verb)
        answer = handle(state, verb, request)
        f.seek(0)
        f.truncate()
        json.dump(state, f)
    if state.get("hang"):
        import time
        time.sleep(3600)
    if state.get("garbage"):
        print("certainly not json")
        return 0
    print(json.dumps(answer))
    return 0


def handle(state, verb, request):
    instances = state["instances"]
    if verb == "describe":
        print("describing the fake cloud", file=sys.stderr)
        return {"max_parallel_creates": 2, "billing": "per second"}
    if verb == "create":
        claim, offer, count = request["claim"], request["offer"], int(request["count"])
        mine = [dict(i, id=k) for k, i in instances.items() if i["claim"] == claim]
        if mine:  # idempotent on the claim
            return {"instances": mine}
        log = state.setdefault("creates", [])
        log.append({"offer": offer["name"], "claim": claim, "t": time.time(), "ok": True})
        if offer["name"] in state.get("stockout", []):
            log[-1]["ok"] = False
            return {"error": {"class": "capacity", "scope": "zone", "message": f"no {offer['gpu_model']} left in {offer['site']}",
                              "retry_after_s": state.get("stockout_retry_s", 300)}}
        quota = state.get("quota_gpus")
        held = sum(i["gpus"] for i in instances.values())
        if quota is not None and held + count * offer["gpus"] > quota:
            log[-1]["ok"] = False
            return {"error": {"class": "quota", "scope": "provider", "message": f"quota of {quota} GPUs"}}
        out = []
        for _ in range(count):
            iid = f"i-{state['next_id']}"
            state["next_id"] += 1
            instances[iid] = {"claim": claim, "offer": offer["name"], "state": "pending", "gpus": offer["gpus"],
                              "server": request.get("server"), "token": request.get("join_token")}
            out.append({"id": iid, "claim": claim, "offer": offer["name"], "state": "pending"})
        return {"instances": out}
    if verb == "delete":
        for iid in request.get("instances", []):
            instances.pop(iid, None)  # not found is success
        return {}
    if verb == "list":
        return {"instances": [{"id": k, "claim": i["claim"], "offer": i["offer"], "state": i["state"]} for k, i in instances.items()]}
    if verb == "offers":
        return {"offers": state.get("offers", [])}
    if verb == "events":
        return {"interruptions": [{"instance": k, "deadline_ms": d} for k, d in state.get("interruptions", {}).items()]}
    print(f"unknown verb {verb}", file=sys.stderr)
    sys.exit(3)


if __name__ == "__main__":
    sys.exit(main())
