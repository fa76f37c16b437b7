#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets into fuzz/corpus/<target>/: the example plans and
CSV files of deploy/examples, and valid encoded requests (first byte: the request type, as the
targets read it; then the protobuf message, encoded here by hand so nothing is needed but
Python). Re-run after changing the examples or the request lists; files are small."""
import hashlib, os, pathlib, shutil

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "corpus"

def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)

def f(num, v):
    """One field: int/bool -> varint, str/bytes -> length-delimited, list -> repeated,
    dict -> embedded message."""
    if isinstance(v, list):
        return b"".join(f(num, x) for x in v)
    if isinstance(v, bool) or isinstance(v, int):
        return varint(num << 3) + varint(int(v))
    if isinstance(v, dict):
        v = msg(v)
    if isinstance(v, str):
        v = v.encode()
    return varint(num << 3 | 2) + varint(len(v)) + v

def msg(fields):
    return b"".join(f(k, v) for k, v in fields.items())

def write(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)

def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    ex = ROOT / "deploy" / "examples"
    for p in [ex / "plan.toml", ex / "plan-paths.toml", ex / "invalid" / "plan-with-errors.toml"]:
        write("plan_toml", p.name, p.read_bytes())
    for p in [ex / "servers.csv", ex / "invalid" / "servers-with-errors.csv"]:
        write("plan_csv", p.name, p.read_bytes())

    nonce = bytes(range(1, 33))
    sha = hashlib.sha256(b"x").hexdigest()
    caller = {1: "alice", 2: "admin", 3: "hr-0001"}
    # Agent requests: index into preflight_agent::fuzzing::REQUEST_TYPES.
    agent = {
        "inventory": (0, {}),
        "verify_package": (1, {1: [{1: "/opt/app/app.jar", 2: 1, 3: sha}]}),
        "bench_disk": (2, {1: {1: "/var/tmp", 2: "randread", 3: 4096, 4: 8, 5: 1 << 26, 6: 2000}}),
        "bench_cpu": (2, {2: {1: 1, 2: 10000, 3: 1000}}),
        "bench_memory": (2, {3: {}}),
        "ports": (3, {1: True}),
        "open_listeners": (4, {1: [8080, 8081], 2: nonce, 3: 10000, 4: "127.0.0.1"}),
        "close_listeners": (5, {1: "l-1"}),
        "run_probes": (6, {1: [{1: "127.0.0.1", 2: 8080}], 2: nonce, 3: 500}),
        "bw_receiver": (7, {1: nonce, 2: 2, 3: 2000, 5: 10000, 6: "127.0.0.1"}),
        "bw_sender": (8, {1: "127.0.0.1:40000", 2: nonce, 3: 1, 4: 1000}),
        "bw_result": (9, {1: "r-1", 2: 100}),
        "harden_audit": (10, {1: 1, 5: caller}),
        "harden_apply_fw": (10, {1: 3, 2: ["ssh.permit_root_login"], 5: caller,
                                 6: {1: [{1: 443, 2: "tcp", 3: ["10.0.0.0/8"], 4: "web"}],
                                     2: ["10.8.0.0/16"], 3: ["10.0.0.1"], 4: 22, 5: 60}}),
        "harden_rollback": (10, {1: 5, 4: "bk-1", 5: caller}),
        "confirm_fw": (11, {1: "fw-1"}),
    }
    for name, (k, m) in agent.items():
        write("agent_requests", name, bytes([k]) + msg(m))

    plan = (ex / "plan.toml").read_text()
    # Controller RPCs: index into METHODS of fuzz_targets/controller_requests.rs.
    ctl = {
        "enroll": (0, {1: "pfj_x", 2: "web-01", 3: "-----BEGIN CERTIFICATE REQUEST-----\n", 4: "0.1.0", 5: "web-01"}),
        "heartbeat": (1, {1: "0.1.0", 2: "web-01", 3: ["10.0.0.5/24"], 4: "127.0.0.1:7444"}),
        "whoami": (3, {}),
        "join_token": (4, {1: 600}),
        "list_agents": (5, {}),
        "revoke": (6, {1: "web-01"}),
        "inventory": (7, {1: "web-01"}),
        "bench": (8, {1: "web-01", 2: {2: {1: 1, 3: 1000}}}),
        "ports": (9, {1: "web-01"}),
        "probe": (10, {1: "web-01", 2: "web-02", 3: "80,443,8080-8090", 4: 500}),
        "bandwidth": (11, {1: "web-01", 2: "web-02", 3: 1, 4: 1}),
        "status": (12, {}),
        "sweep": (13, {1: "b1", 2: "plan.toml", 3: plan, 4: 4}),
        "sweeps": (14, {1: "b1"}),
        "get_sweep": (15, {1: 1}),
        "harden": (16, {1: 1, 2: ["web-01"]}),
        "fw_allow": (17, {1: "web-01"}),
        "export": (18, {1: ["web-01"]}),
        "hstatus": (19, {2: "b1"}),
        "create_project": (20, {2: {1: "P1", 2: "portal", 3: "gov"}}),
        "create_batch": (20, {4: {1: "B1", 2: "P1", 4: "title"}}),
        "advance": (20, {5: {1: "B1"}}),
        "pause": (20, {15: {1: "B1", 2: "package", 3: "backup missing"}}),
        "get_batch": (21, {1: "B1"}),
        "list_batches": (22, {1: "P1"}),
        "queue": (23, {1: "amy"}),
        "projects": (24, {}),
        "pause_stats": (25, {1: "reason", 2: 0}),
        "add_user": (26, {1: "pat", 2: "project"}),
        "users": (27, {}),
        "clock_advance": (28, {2: 3600000}),
        "clock_show": (28, {3: True}),
        "dev_record": (29, {}),
    }
    for name, (k, m) in ctl.items():
        write("controller_requests", name, bytes([k]) + msg(m))
    for t in sorted(p.name for p in OUT.iterdir()):
        files = list((OUT / t).iterdir())
        print(f"{t}: {len(files)} files, {sum(p.stat().st_size for p in files)} bytes")

main()
