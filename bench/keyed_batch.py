#!/usr/bin/env python3
"""POST /kafka/send-batch with N records, each with a fresh idempotency_key, ROUNDS times, one
request at a time; prints p50 and max. Usage: bench/keyed_batch.py PORT N ROUNDS (topic bench-keyed,
created by `kafkit serve --topics bench-keyed:3`). Measures what claiming keys costs a batch."""
import json, sys, time, uuid, urllib.request
port, n, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
times = []
for r in range(rounds):
    msgs = [{"topic": "bench-keyed", "key": f"k{i}", "value": {"i": i}, "idempotency_key": str(uuid.uuid4())} for i in range(n)]
    body = json.dumps({"messages": msgs}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/kafka/send-batch", data=body, headers={"content-type": "application/json"})
    t = time.perf_counter()
    with urllib.request.urlopen(req) as resp:
        out = json.load(resp)
    times.append((time.perf_counter() - t) * 1000)
    assert out["succeeded"] == n, out
times.sort()
print(f"{n} keyed records per batch, {rounds} batches: p50 {times[len(times)//2]:.1f} ms, max {times[-1]:.1f} ms")
