#!/usr/bin/env python3
"""Cluster takeover benchmark (#31): three exporter members on one PostgreSQL database and the
simulator serving N tenants; the member owning the most tenants is killed with -9, again and
again, and the time until every one of its tenants has been polled by another member is
measured (p50 and max). Also: database transactions and WAL bytes per tenant poll, the database's CPU, and each member's RSS.

Not a test: figures for docs/benchmarks.md. Needs the libpq variables of a PostgreSQL server
(PGHOST, PGPORT, PGUSER, PGPASSWORD: run it under `pg_virtualenv`) and a built exporter
(EXE, default target/release then target/debug).

    pg_virtualenv python3 benches/scripts/cluster_takeover.py [--tenants 30] [--kills 5] [--lease 6]
"""
import argparse, json, os, re, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request

def exe():
    t = os.environ.get("CARGO_TARGET_DIR", "target")
    for p in (os.environ.get("EXE"), f"{t}/release/mde-liveresponse-exporter", f"{t}/debug/mde-liveresponse-exporter"):
        if p and os.access(p, os.X_OK):
            return p
    sys.exit("build the exporter first (cargo build --release)")

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def psql(sql, db="postgres"):
    return subprocess.run(["psql", "-h", "127.0.0.1", "-d", db, "-tAc", sql], check=True, capture_output=True, text=True).stdout.strip()

def scrape(port):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except Exception:
        return ""

def polled(text):
    """tenant -> last successful poll (Unix s)."""
    out = {}
    for m in re.finditer(r'^mde_exporter_last_poll_success_timestamp_seconds\{tenant="([^"]+)"\} (\S+)$', text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out

def postgres_cpu_s():
    """CPU seconds (user + system) of every postgres process on this machine."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = open(f"/proc/{pid}/stat").read()
            if "(postgres)" not in stat:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            continue
    return total / os.sysconf("SC_CLK_TCK")

def wal_bytes():
    return int(psql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))

def polls_done(ports):
    """Polls recorded over the members (mde_exporter_poll_duration_seconds_count)."""
    n = 0.0
    for port in ports:
        for m in re.finditer(r'^mde_exporter_poll_duration_seconds_count\{[^}]*\} (\S+)$', scrape(port), re.M):
            n += float(m.group(1))
    return n

def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0

def main():
    a = argparse.ArgumentParser()
    a.add_argument("--tenants", type=int, default=30)
    a.add_argument("--kills", type=int, default=5)
    a.add_argument("--lease", type=int, default=6)
    a.add_argument("--poll", type=float, default=1.0)
    a.add_argument("--start-timeout", type=int, default=120)
    args = a.parse_args()
    for k in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD"):
        if k not in os.environ:
            sys.exit(f"{k} is not set: run under pg_virtualenv")
    binary = exe()
    psql("DROP DATABASE IF EXISTS mde_bench_cluster WITH (FORCE)")
    psql("CREATE DATABASE mde_bench_cluster")
    url = f"postgres://{os.environ['PGUSER']}:{os.environ['PGPASSWORD']}@127.0.0.1:{os.environ['PGPORT']}/mde_bench_cluster?sslmode=disable"
    sim_port = free_port()
    procs = []
    sim = subprocess.Popen([binary, "simulate", "--web.listen-address", f"127.0.0.1:{sim_port}",
                            "--sim.tenants", str(args.tenants), "--sim.actions", "20", "--sim.history", "1h"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(sim)
    tmp = tempfile.mkdtemp()
    lines = [f"poll_interval: {args.poll}s", "cluster:", f"  postgres_url: {url}", f"  lease_duration: {args.lease}s",
             "  member: ${MEMBER}", "tenants:"]
    for i in range(args.tenants):
        tid = "00000000-0000-4000-8000-000000005e70" if i == 0 else f"{i:08x}-0000-4000-8000-000000005e70"
        cid = "11111111-1111-4111-8111-111111111111" if i == 0 else f"{i:08x}-1111-4111-8111-111111111111"
        sec = "sim-client-secret" if i == 0 else f"sim-client-secret-{i}"
        lines += [f"  - name: t{i:04d}", f"    tenant_id: {tid}", f"    client_id: {cid}", f"    client_secret: {sec}",
                  f"    api_url: http://127.0.0.1:{sim_port}", f"    login_url: http://127.0.0.1:{sim_port}"]
    cfg = os.path.join(tmp, "config.yml")
    open(cfg, "w").write("\n".join(lines) + "\n")
    members = {}
    def start(name):
        port = free_port()
        p = subprocess.Popen([binary, "--config.file", cfg, "--web.listen-address", f"127.0.0.1:{port}"],
                             env={**os.environ, "MEMBER": name}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        members[name] = (p, port)
    def owners():
        own = {}
        for name, (p, port) in members.items():
            for t in polled(scrape(port)):
                own[t] = name
        return own
    try:
        for n in ("m0", "m1", "m2"):
            start(n)
        deadline = time.time() + args.start_timeout
        while len(owners()) < args.tenants:
            if time.time() > deadline:
                sys.exit(f"not every tenant was polled within {args.start_timeout} s")
            time.sleep(0.5)
        time.sleep(args.lease)
        commits0 = int(psql("SELECT xact_commit FROM pg_stat_database WHERE datname = 'mde_bench_cluster'"))
        ports = [port for _, port in members.values()]
        cpu0, wal0, window, polls0 = postgres_cpu_s(), wal_bytes(), 20, polls_done(ports)
        time.sleep(window)
        commits = int(psql("SELECT xact_commit FROM pg_stat_database WHERE datname = 'mde_bench_cluster'")) - commits0
        db_cpu = (postgres_cpu_s() - cpu0) / window
        wal = wal_bytes() - wal0
        tenant_polls = max(polls_done(ports) - polls0, 1)
        rss = {n: rss_mib(p.pid) for n, (p, _) in members.items()}
        takeovers = []
        nxt = 3
        for k in range(args.kills):
            own = owners()
            counts = {}
            for t, m in own.items():
                counts[m] = counts.get(m, 0) + 1
            victim = max(counts, key=counts.get)
            lost = [t for t, m in own.items() if m == victim]
            p, _ = members.pop(victim)
            t0 = time.time()
            p.send_signal(signal.SIGKILL); p.wait()
            while True:
                seen = {}
                for name, (q, port) in members.items():
                    seen.update({t: ts for t, ts in polled(scrape(port)).items()})
                if all(seen.get(t, 0) > t0 for t in lost):
                    takeovers.append(time.time() - t0)
                    break
                if time.time() - t0 > 10 * args.lease:
                    sys.exit(f"kill {k}: tenants {lost} not polled again within {10 * args.lease} s")
                time.sleep(0.1)
            start(f"m{nxt}"); nxt += 1
            time.sleep(2 * args.lease)
        print(json.dumps({
            "tenants": args.tenants, "lease_s": args.lease, "poll_interval_s": args.poll, "kills": args.kills,
            "takeover_p50_s": round(statistics.median(takeovers), 2), "takeover_max_s": round(max(takeovers), 2),
            "takeovers_s": [round(x, 2) for x in takeovers],
            "tenant_polls_in_window": int(tenant_polls),
            "db_transactions_per_tenant_poll": round(commits / tenant_polls, 2),
            "db_wal_bytes_per_tenant_poll": round(wal / tenant_polls),
            "db_cpu_share_of_a_core": round(db_cpu, 3),
            "rss_mib_per_member": {n: round(v, 1) for n, v in rss.items()},
            "exporter": binary,
        }, indent=2))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        psql("DROP DATABASE IF EXISTS mde_bench_cluster WITH (FORCE)")

if __name__ == "__main__":
    main()
