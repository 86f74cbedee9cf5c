#!/usr/bin/env python3
"""End to end with redis-py: 20,000 users through a 50/50 experiment flag
with a true +10 % relative conversion lift (30 % → 33 %); FLAG.TRACK records
the conversions and EXPERIMENT.RESULTS must find the lift significant, with
no sample-ratio mismatch. Usage: experiments_check.py <port>"""
import json
import random
import sys

import redis

port = int(sys.argv[1])
r = redis.Redis(port=port, decode_responses=True)
flag = {"on": True,
        "variations": [{"name": "control", "value": "old"}, {"name": "treatment", "value": "new"}],
        "off_variation": "control",
        "fallthrough": {"rollout": [{"variation": "control", "weight": 5000},
                                    {"variation": "treatment", "weight": 5000}]}}
r.execute_command("FLAG.SET", "compat:exp-button", json.dumps(flag))
r.execute_command("EXPERIMENT.SET", "compat:exp", json.dumps({
    "flag": "compat:exp-button", "control": "control",
    "metrics": [{"name": "conversion", "kind": "binary", "event": "purchase"}],
    "alpha": 0.05, "power": 0.8}))
r.execute_command("EXPERIMENT.START", "compat:exp")

rng = random.Random(14)
users = 20_000
for start in range(0, users, 500):
    pipe = r.pipeline(transaction=False)
    batch = [f"user-{i}" for i in range(start, start + 500)]
    for u in batch:
        pipe.execute_command("FLAG.EVAL", "compat:exp-button", json.dumps({"key": u}))
    served = pipe.execute()
    pipe = r.pipeline(transaction=False)
    for u, value in zip(batch, served):
        rate = 0.33 if json.loads(value) == "new" else 0.30
        if rng.random() < rate:
            pipe.execute_command("FLAG.TRACK", "purchase", json.dumps({"key": u}))
    pipe.execute()

res = json.loads(r.execute_command("EXPERIMENT.RESULTS", "compat:exp"))
cmp = res["metrics"][0]["comparisons"][0]
print(f"units={res['units']} srm_p={res['srm_p_value']:.3f} lift={cmp['relative_lift']:.3f} "
      f"[{cmp['relative_ci_low']:.3f}, {cmp['relative_ci_high']:.3f}] p={cmp['p_value']:.2e} "
      f"sequential_p={cmp['sequential_p_value']:.2e} verdict={cmp['sequential_verdict']}")
assert res["units"] == users, res
assert not res["srm"], res
assert cmp["variation"] == "treatment"
assert cmp["significant"] and cmp["p_value"] < 0.05, cmp
assert cmp["relative_ci_low"] > 0, cmp
r.execute_command("EXPERIMENT.DEL", "compat:exp")
print("experiments: ok")
