#!/usr/bin/env python3
"""Checks of the container image for scripts/check-image.sh (Python standard library only).

  check_image.py IMAGE

IMAGE is in buildah's store (scripts/image.sh built it). Checked, each failure named:
  - its configuration: user 65532:65532, the entrypoint, the state volume, port 9717, the OCI
    labels (source, revision = this checkout's, version = Cargo.toml's, licenses = Apache-2.0);
  - its files (the image mounted): the binary statically linked, the CA bundle with the roots
    the Microsoft endpoints chain to, the passwd entry of uid 65532, the state directory owned
    by it, and the whole under 25 MB;
  - the image run (`buildah run --isolation chroot`, the image's entrypoint with --demo on
    loopback): /metrics serves the demo's script results and mde_exporter_build_info with the
    image's revision, /transcripts answers with the transcript of a machine and script that
    /metrics names, the process runs as uid 65532 and writes its state file in the volume;
  - the CA bundle is the one the binary trusts: a token request to an HTTPS server on loopback
    whose certificate comes from a throwaway CA is refused with the image's own bundle and
    reaches the server when that CA is mounted in the bundle's place.
"""
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

sys.dont_write_bytecode = True
BUILDAH = ["buildah", "--storage-driver", os.environ.get("BUILDAH_STORAGE_DRIVER", "vfs")]
STATE_DIR = "/var/lib/mde-liveresponse-exporter"
BIN = "/usr/local/bin/mde-liveresponse-exporter"
SOURCE = "https://github.com/mde-liveresponse-exporter/mde-liveresponse-exporter"
MAX_BYTES = 25 * 1000 * 1000
# The roots that login.microsoftonline.com and the Defender API chain to today, and Microsoft's
# own (its services move to it).
ROOTS = ("DigiCert Global Root G2", "Microsoft RSA Root Certificate Authority 2017",
         "Microsoft ECC Root Certificate Authority 2017")
errors = []


def fail(msg):
    errors.append(msg)
    print(f"FAIL: {msg}", flush=True)


def ok(msg):
    print(f"ok: {msg}", flush=True)


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, accept=None, timeout=5):
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, OSError):
        return None, ""


def check_config(image, revision, version):
    d = json.loads(run(*BUILDAH, "inspect", "--type", "image", image))
    cfg = d["OCIv1"]["config"]
    labels = cfg.get("Labels", {})
    want = {
        "User": "65532:65532",
        "Entrypoint": [BIN],
        "Volumes": {STATE_DIR: {}},
        "ExposedPorts": {"9717/tcp": {}},
    }
    for k, v in want.items():
        if cfg.get(k) != v:
            fail(f"image config {k} is {cfg.get(k)!r}, want {v!r}")
    want_labels = {
        "org.opencontainers.image.source": SOURCE,
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.licenses": "Apache-2.0",
    }
    for k, v in want_labels.items():
        if labels.get(k) != v:
            fail(f"label {k} is {labels.get(k)!r}, want {v!r}")
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", labels.get("org.opencontainers.image.created", "")):
        fail(f"label org.opencontainers.image.created is {labels.get('org.opencontainers.image.created')!r}")
    ok(f"config: user {cfg.get('User')}, entrypoint {cfg.get('Entrypoint')}, volume, port, "
       f"{len([k for k in labels if k.startswith('org.opencontainers.')])} OCI labels")
    return cfg


def check_files(root):
    binary = root + BIN
    if not os.path.isfile(binary):
        fail(f"no {BIN} in the image")
        return
    phdrs = run("readelf", "-lW", binary)
    if "INTERP" in phdrs or "Requesting program interpreter" in phdrs:
        fail(f"{BIN} is dynamically linked: the image has no C library")
    bundle = root + "/etc/ssl/certs/ca-certificates.crt"
    if not os.path.isfile(bundle):
        fail("no /etc/ssl/certs/ca-certificates.crt in the image")
    else:
        subjects = run("sh", "-c", 'openssl crl2pkcs7 -nocrl -certfile "$0" | openssl pkcs7 -print_certs -noout',
                       bundle)
        names = [ln for ln in subjects.splitlines() if ln.startswith("subject=")]
        if len(names) < 100:
            fail(f"the CA bundle holds {len(names)} certificates (Debian's has about 150)")
        for r in ROOTS:
            if not any(ln.endswith("CN = " + r) or ln.endswith("CN=" + r) for ln in names):
                fail(f"the CA bundle lacks {r}")
        ok(f"CA bundle: {len(names)} certificates, with {', '.join(ROOTS)}")
    with open(root + "/etc/passwd") as f:
        if not any(ln.split(":")[2:4] == ["65532", "65532"] for ln in f.read().splitlines()):
            fail("/etc/passwd has no entry for uid 65532")
    st = os.stat(root + STATE_DIR)
    if (st.st_uid, st.st_gid) != (65532, 65532) or st.st_mode & 0o777 != 0o750:
        fail(f"{STATE_DIR} is {st.st_uid}:{st.st_gid} {oct(st.st_mode & 0o777)}, want 65532:65532 0750")
    for d in ("/etc", "/var/lib", "/usr/local/bin"):
        if os.stat(root + d).st_uid != 0:
            fail(f"{d} is not owned by root")
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    size_mb = total / 1e6
    if total >= MAX_BYTES:
        fail(f"the image's files are {size_mb:.1f} MB, over 25 MB")
    ok(f"files: static binary ({os.path.getsize(binary) / 1e6:.1f} MB), passwd, state directory "
       f"65532 0750; {size_mb:.1f} MB in all (target under 25 MB)")
    print(f"figure: image files {total} bytes", flush=True)


class Container:
    """A working container of IMAGE; `start` runs a command in it in the background."""

    def __init__(self, image):
        self.name = run(*BUILDAH, "from", "--quiet", image).strip()
        self.proc = None

    def mount(self):
        return run(*BUILDAH, "mount", self.name).strip()

    def start(self, argv, log, volumes=()):
        vol = [a for v in volumes for a in ("--volume", v)]
        self.proc = subprocess.Popen([*BUILDAH, "run", "--isolation", "chroot", *vol, self.name, "--", *argv],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def remove(self):
        self.stop()
        subprocess.run([*BUILDAH, "rm", self.name], capture_output=True)


def listener_pid(port):
    out = run("ss", "-ltnpH", f"sport = :{port}")
    m = re.search(r"pid=(\d+)", out)
    return int(m.group(1)) if m else None


def proc_ids(pid):
    with open(f"/proc/{pid}/status") as f:
        st = dict(ln.split(":", 1) for ln in f.read().splitlines() if ":" in ln)
    return st["Uid"].split(), st["Gid"].split()


SERIES = re.compile(r'^(mde_\w+)\{([^}]*)\} (\S+)', re.M)


def labels_of(s):
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', s))


def check_demo(c, cfg, revision, tmp):
    port = free_port()
    argv = cfg["Entrypoint"] + ["--demo", "--demo.time-scale=20", f"--web.listen-address=127.0.0.1:{port}",
                                f"--state.path={STATE_DIR}/state.redb", "--log.format=json"]
    base = f"http://127.0.0.1:{port}"
    with open(os.path.join(tmp, "demo.log"), "w") as log:
        c.start(argv, log)
        deadline = time.monotonic() + 90
        pid, found, text = None, None, ""
        while time.monotonic() < deadline and c.proc.poll() is None:
            status, text = get(base + "/metrics")
            if status == 200:
                pid = pid or listener_pid(port)
                # A final script result of the demo tenant with its machine and script.
                for name, lab, _ in SERIES.findall(text):
                    lb = labels_of(lab)
                    if name.startswith("mde_liveresponse_script") and lb.get("tenant") == "demo" \
                            and lb.get("machine") and lb.get("script"):
                        found = (name, lb)
                        break
                if found:
                    break
            time.sleep(1)
        if c.proc.poll() is not None:
            fail(f"the exporter in the image exited ({c.proc.returncode}): {open(log.name).read()[-2000:]}")
            return
        if not found:
            fail(f"/metrics of the image's demo shows no script result of tenant demo within 90 s; "
                 f"families: {sorted(set(n for n, _, _ in SERIES.findall(text)))[:40]}")
            c.stop()
            return
        name, lb = found
        ok(f"/metrics from the image serves the demo's results, e.g. {name}{{machine={lb['machine']!r}, "
           f"script={lb['script']!r}}}")
        bi = [labels_of(lab) for n, lab, _ in SERIES.findall(text) if n == "mde_exporter_build_info"]
        if not bi or bi[0].get("revision") != revision:
            fail(f"mde_exporter_build_info should carry revision {revision}, got {bi}")
        else:
            ok(f"mde_exporter_build_info revision {revision} (the image label's)")
        q = urllib.parse.urlencode({"tenant": "demo", "machine": lb["machine"], "script": lb["script"]})
        shown = None
        for _ in range(30):
            status, body = get(f"{base}/transcripts?{q}", accept="application/json")
            if status == 200:
                shown = json.loads(body)
                break
            time.sleep(1)
        if not shown:
            fail(f"/transcripts?{q} did not answer 200 ({status}: {body[:200]})")
        elif (shown.get("machine"), shown.get("script")) != (lb["machine"], lb["script"]):
            fail(f"/transcripts?{q} shows {shown.get('machine')}/{shown.get('script')}")
        else:
            ok(f"/transcripts?{q}: 200, action {shown.get('action_id')}, exit code {shown.get('exit_code')}")
        if pid is None:
            fail(f"no process listens on port {port}")
        else:
            uid, gid = proc_ids(pid)
            if set(uid) != {"65532"} or set(gid) != {"65532"}:
                fail(f"the exporter runs as uid {uid} gid {gid}, want 65532 (the image's USER)")
            else:
                ok(f"the exporter (pid {pid}) runs as uid/gid 65532, not root")
            try:
                st = os.stat(f"/proc/{pid}/root{STATE_DIR}/state.redb")
                if st.st_uid != 65532:
                    fail(f"the state file is owned by {st.st_uid}")
                else:
                    ok(f"state file {STATE_DIR}/state.redb written by uid 65532 ({st.st_size} bytes)")
            except OSError as e:
                fail(f"no state file in the volume: {e}")
        c.stop()


class TokenServer(BaseHTTPRequestHandler):
    """An HTTPS server on loopback that only counts the requests that reach it."""
    hits = []

    def do_POST(self):
        TokenServer.hits.append(self.path)
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error":"invalid_client","error_description":"check-image"}')

    do_GET = do_POST

    def log_message(self, *a):
        pass


UNTRUSTED = re.compile(r"invalid peer certificate: UnknownIssuer|UnknownIssuer")


def check_trust(c, cfg, tmp):
    sh = ("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=check-image-ca "
          "-keyout ca.key -out ca.pem 2>/dev/null && "
          "openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout srv.key -out srv.csr 2>/dev/null && "
          "printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' >ext && "
          "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
          "-extfile ext -out srv.pem 2>/dev/null")
    subprocess.run(sh, shell=True, check=True, cwd=tmp)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(tmp, "srv.pem"), os.path.join(tmp, "srv.key"))
    httpd = HTTPServer(("127.0.0.1", 0), TokenServer)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    tls_port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    config = os.path.join(tmp, "trust.yml")
    with open(config, "w") as f:
        f.write(f"""tenants:
  - name: trust
    tenant_id: 11111111-2222-3333-4444-555555555555
    client_id: 66666666-7777-8888-9999-000000000000
    client_secret: not-a-secret
    login_url: https://127.0.0.1:{tls_port}
    api_url: https://127.0.0.1:{tls_port}
""")
    os.chmod(tmp, 0o755)
    for f in ("trust.yml", "ca.pem"):
        os.chmod(os.path.join(tmp, f), 0o644)

    def attempt(label, volumes):
        TokenServer.hits.clear()
        port = free_port()
        argv = cfg["Entrypoint"] + [f"--config.file=/etc/mde-liveresponse-exporter/config.yml",
                                    f"--web.listen-address=127.0.0.1:{port}", f"--state.path={STATE_DIR}/trust.redb"]
        with open(os.path.join(tmp, f"trust-{label}.log"), "w") as log:
            c.start(argv, log, volumes=[f"{config}:/etc/mde-liveresponse-exporter/config.yml:ro", *volumes])
            deadline = time.monotonic() + 40
            refused = False
            while time.monotonic() < deadline and c.proc.poll() is None and not TokenServer.hits:
                # rustls's verdict on the server's certificate, in the exporter's log line of
                # the failed token request.
                with open(log.name) as f:
                    if UNTRUSTED.search(f.read()):
                        refused = True
                        break
                time.sleep(0.5)
            c.stop()
            with open(log.name) as f:
                return list(TokenServer.hits), refused, f.read()

    hits, refused, log = attempt("image-bundle", [])
    if hits:
        fail(f"with the image's own CA bundle the exporter trusted a throwaway CA: {hits}")
    elif not refused:
        fail(f"with the image's own CA bundle: no refused certificate in the log within 40 s: {log[-1500:]}")
    else:
        ok(f"the image's CA bundle does not trust a throwaway CA: {UNTRUSTED.search(log).group(0)}")
    hits, _, log = attempt("mounted-ca", [f"{tmp}/ca.pem:/etc/ssl/certs/ca-certificates.crt:ro"])
    if not hits:
        fail(f"with the throwaway CA at /etc/ssl/certs/ca-certificates.crt the token request did not "
             f"reach the server: the binary does not read that bundle; log: {log[-1500:]}")
    else:
        ok(f"with the throwaway CA mounted at /etc/ssl/certs/ca-certificates.crt the sign-in reached the server "
           f"({hits[0]}): that file is the trust store the binary uses")
    httpd.shutdown()


def main():
    image = sys.argv[1]
    revision = run("git", "rev-parse", "--short=12", "HEAD").strip()
    with open("Cargo.toml") as f:
        version = re.search(r'^version = "(.*)"$', f.read(), re.M).group(1)
    cfg = check_config(image, revision, version)
    c = Container(image)
    tmp = tempfile.mkdtemp(prefix="check-image.")
    try:
        check_files(c.mount())
        check_demo(c, cfg, revision, tmp)
        check_trust(c, cfg, tmp)
    finally:
        c.remove()
        subprocess.run(["rm", "-rf", tmp])
    print(f"check_image: {'FAILED' if errors else 'ok'} ({len(errors)} failures)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
