#!/usr/bin/env python3
"""Structural checks of deploy/ for scripts/check-deploy.sh (needs PyYAML and jsonschema).

Subcommands (each prints what it checked, exits 1 on any failure):
  k8s OVERLAY RENDERED.yaml          rendered kustomize output of one overlay (cluster mode, #31,
                                     when the pods get MDE_CLUSTER_POSTGRES_URL)
  rules-from-prometheusrule RENDERED.yaml OUT.yml   write the PrometheusRule's spec as a rules file
  compose COMPOSE.yml SCHEMA.json    docker-compose file: compose-spec schema + our conventions
  grafana-provisioning DIR COMPOSE.yml
  otel CONFIG.yml COMPOSE.yml
  dockerfile DOCKERFILE [CONTAINERFILE]  runtime stage non-root, volume, labels; equal to CONTAINERFILE
  systemd UNIT
  dashboards RENDERED.yaml DIR [LABEL VALUE]   every DIR/*.json a ConfigMap with the sidecar label
                                     and folder annotation, JSON equal; GrafanaDashboards refer to them
  shards BIN RENDERED.yaml N_TENANTS   run the real exporter once per StatefulSet pod (HOSTNAME=
                                     <name>-<ordinal>, the rendered args' --shard.count) on a config of
                                     N tenants and check every tenant is served by exactly one shard
"""
import json
import os
import re
import sys

import yaml

STATE_DIR = "/var/lib/mde-liveresponse-exporter"
APP = "mde-liveresponse-exporter"
errors = []


def fail(msg):
    errors.append(msg)
    print(f"FAIL: {msg}")


def done(what):
    print(f"{what}: {'FAILED' if errors else 'ok'}")
    return 1 if errors else 0


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def args_of(container):
    out = {}
    for a in container.get("args", []) + container.get("command", []):
        if a.startswith("--"):
            k, _, v = a.partition("=")
            out[k] = v
    return out


# --- Kubernetes ------------------------------------------------------------------------------

def check_k8s(overlay, rendered):
    docs = load_all(rendered)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    kinds = sorted(by_kind)
    print(f"{overlay}: {len(docs)} objects: {', '.join(kinds)}")

    if "Secret" in by_kind:
        fail(f"{overlay}: renders a Secret; secrets must be referenced, not committed")
    for k in ("ServiceAccount", "Service", "ServiceMonitor", "PrometheusRule"):
        if len(by_kind.get(k, [])) != 1:
            fail(f"{overlay}: expected exactly one {k}, got {len(by_kind.get(k, []))}")
    # The exporter's config (dashboards come as ConfigMaps of their own in the chart).
    configs = [c for c in by_kind.get("ConfigMap", []) if "config.yml" in c.get("data", {})]
    if len(configs) != 1:
        fail(f"{overlay}: expected exactly one ConfigMap with config.yml, got {len(configs)}")
    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])
    if len(workloads) != 1:
        fail(f"{overlay}: expected one Deployment or StatefulSet, got {len(workloads)}")
        return
    w = workloads[0]
    pod = w["spec"]["template"]["spec"]
    labels = w["spec"]["template"]["metadata"].get("labels", {})
    sel = w["spec"]["selector"]["matchLabels"]
    if any(labels.get(k) != v for k, v in sel.items()):
        fail(f"{overlay}: {w['kind']} selector {sel} does not match its pod labels")
    configmaps = {c["metadata"]["name"] for c in by_kind.get("ConfigMap", [])}
    pvcs = {c["metadata"]["name"] for c in by_kind.get("PersistentVolumeClaim", [])}
    vcts = {v["metadata"]["name"] for v in w["spec"].get("volumeClaimTemplates", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for v in volumes.values():
        if "configMap" in v and v["configMap"]["name"] not in configmaps:
            fail(f"{overlay}: volume {v['name']} refers to missing ConfigMap {v['configMap']['name']}")
        if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in pvcs:
            fail(f"{overlay}: volume {v['name']} refers to missing PVC {v['persistentVolumeClaim']['claimName']}")
    psc = pod.get("securityContext", {})
    if not psc.get("runAsNonRoot") or not psc.get("runAsUser"):
        fail(f"{overlay}: pod must set runAsNonRoot and a non-root runAsUser")
    if pod.get("automountServiceAccountToken") is not False:
        fail(f"{overlay}: automountServiceAccountToken should be false (no Kubernetes API use)")
    c = pod["containers"][0]
    a = args_of(c)
    image = c.get("image", "")
    if not re.fullmatch(r"[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+:[A-Za-z0-9._-]+", image) or image.endswith(":latest"):
        fail(f"{overlay}: image {image!r} should be a registry path with a pinned tag")
    csc = c.get("securityContext", {})
    if csc.get("allowPrivilegeEscalation") is not False or not csc.get("readOnlyRootFilesystem") \
            or "ALL" not in csc.get("capabilities", {}).get("drop", []):
        fail(f"{overlay}: container needs allowPrivilegeEscalation=false, readOnlyRootFilesystem, drop ALL")
    env = {e["name"]: e for e in c.get("env", [])}
    # Cluster mode (#31): the state is in the database the URL names.
    cluster = "MDE_CLUSTER_POSTGRES_URL" in env
    if a.get("--config.file") != "/etc/mde-liveresponse-exporter/config.yml":
        fail(f"{overlay}: --config.file should be /etc/mde-liveresponse-exporter/config.yml")
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    state = mounts.get(STATE_DIR)
    if cluster:
        check_cluster(overlay, w, by_kind, env, a, mounts, configs)
    elif not a.get("--state.path", "").startswith(STATE_DIR + "/"):
        fail(f"{overlay}: --state.path must be under {STATE_DIR}")
    elif not state:
        fail(f"{overlay}: nothing mounted at {STATE_DIR}")
    elif not (state in vcts or "persistentVolumeClaim" in volumes.get(state, {})):
        fail(f"{overlay}: {STATE_DIR} is not on a persistent volume")
    if "/etc/mde-liveresponse-exporter" not in mounts:
        fail(f"{overlay}: config not mounted at /etc/mde-liveresponse-exporter")
    secret_refs = [e for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    if overlay == "workload-identity":
        # See: #10 — no secret at all; the AKS webhook must be asked to mutate the pod, and
        # the ServiceAccount must name the app registration.
        if secret_refs:
            fail(f"{overlay}: secretKeyRef present: workload identity needs no client secret")
        if labels.get("azure.workload.identity/use") != "true":
            fail(f"{overlay}: pod label azure.workload.identity/use=\"true\" missing")
        sa = by_kind.get("ServiceAccount", [{}])[0]
        if not re.fullmatch(r"[0-9a-f-]{36}", sa.get("metadata", {}).get("annotations", {})
                            .get("azure.workload.identity/client-id", "")):
            fail(f"{overlay}: ServiceAccount annotation azure.workload.identity/client-id missing")
        if pod.get("serviceAccountName") != sa.get("metadata", {}).get("name"):
            fail(f"{overlay}: the pod does not run as the annotated ServiceAccount")
        cm = by_kind.get("ConfigMap", [{}])[0]
        cfg = yaml.safe_load(cm.get("data", {}).get("config.yml", "")) or {}
        for t in cfg.get("tenants", []):
            method = (t.get("auth") or {}).get("method")
            if method != "workload_identity" or "client_secret" in t or "client_secret_file" in t:
                fail(f"{overlay}: tenant {t.get('name')} does not sign in with method workload_identity")
    elif not secret_refs:
        fail(f"{overlay}: no secretKeyRef: the client secret must come from a Secret")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if ports.get("metrics") != 9717:
        fail(f"{overlay}: container port 'metrics' should be 9717")
    for probe, path in (("readinessProbe", "/-/ready"), ("livenessProbe", "/-/healthy")):
        if c.get(probe, {}).get("httpGet", {}).get("path") != path:
            fail(f"{overlay}: {probe} should GET {path}")

    svc = by_kind.get("Service", [{}])[0]
    svc_ports = {p.get("name") for p in svc.get("spec", {}).get("ports", [])}
    if any(labels.get(k) != v for k, v in svc.get("spec", {}).get("selector", {}).items()):
        fail(f"{overlay}: Service selector does not match the pods")
    sm = by_kind.get("ServiceMonitor", [{}])[0]
    if sm.get("apiVersion") != "monitoring.coreos.com/v1":
        fail(f"{overlay}: ServiceMonitor apiVersion should be monitoring.coreos.com/v1")
    sm_spec = sm.get("spec", {})
    sm_sel = sm_spec.get("selector", {}).get("matchLabels", {})
    if not sm_sel or any(svc.get("metadata", {}).get("labels", {}).get(k) != v for k, v in sm_sel.items()):
        fail(f"{overlay}: ServiceMonitor selector {sm_sel} does not select the Service")
    allowed_sm = {"selector", "endpoints", "jobLabel", "namespaceSelector", "podTargetLabels", "targetLabels",
                  "sampleLimit", "attachMetadata"}
    for k in set(sm_spec) - allowed_sm:
        fail(f"{overlay}: ServiceMonitor spec has unexpected key {k!r}")
    for ep in sm_spec.get("endpoints", []) or [{}]:
        for k in set(ep) - {"port", "path", "interval", "scrapeTimeout", "scheme", "tlsConfig", "basicAuth",
                            "honorLabels", "relabelings", "metricRelabelings", "params", "authorization"}:
            fail(f"{overlay}: ServiceMonitor endpoint has unexpected key {k!r}")
        if ep.get("port") not in svc_ports:
            fail(f"{overlay}: ServiceMonitor endpoint port {ep.get('port')!r} is not a Service port {svc_ports}")
        if ep.get("path", "/metrics") != a.get("--web.telemetry-path", "/metrics"):
            fail(f"{overlay}: ServiceMonitor path differs from --web.telemetry-path")
        for k in ("interval", "scrapeTimeout"):
            if k in ep and not re.fullmatch(r"([0-9]+(ms|s|m|h))+", ep[k]):
                fail(f"{overlay}: ServiceMonitor {k} {ep[k]!r} is not a duration")
    if svc.get("metadata", {}).get("name") != APP:
        fail(f"{overlay}: Service must be named {APP}: it becomes the job label MdeExporterDown matches")

    if w["kind"] == "StatefulSet":
        count = a.get("--shard.count")
        if count is None or int(count) != w["spec"].get("replicas"):
            fail(f"{overlay}: StatefulSet replicas {w['spec'].get('replicas')} != --shard.count {count}")
        if "--shard.index" in a:
            fail(f"{overlay}: --shard.index must not be set: each pod derives it from its ordinal")
        host = [e for e in c.get("env", []) if e["name"] == "HOSTNAME"]
        if not host or host[0].get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
            fail(f"{overlay}: HOSTNAME should come from fieldRef metadata.name")
        if w["spec"].get("serviceName") != svc.get("metadata", {}).get("name"):
            fail(f"{overlay}: StatefulSet serviceName is not the Service")
        if svc.get("spec", {}).get("clusterIP") != "None":
            fail(f"{overlay}: the StatefulSet's governing Service should be headless")
        print(f"{overlay}: StatefulSet {w['metadata']['name']} with {w['spec']['replicas']} shards")
    elif not cluster:
        if w["spec"].get("replicas", 1) != 1 or w["spec"].get("strategy", {}).get("type") != "Recreate":
            fail(f"{overlay}: Deployment must have 1 replica and the Recreate strategy (one state writer)")
        if "--shard.count" in a:
            fail(f"{overlay}: Deployment should not shard")
    return done(f"{overlay}: manifests")


def check_cluster(overlay, w, by_kind, env, a, mounts, configs):
    """Cluster mode (#31): members of one cluster in a Deployment, no state on any volume, the
    member named after its pod, the database URL from a Secret, and a PodDisruptionBudget."""
    labels = w["spec"]["template"]["metadata"].get("labels", {})
    if w["kind"] != "Deployment" or w["spec"].get("replicas", 1) < 2:
        fail(f"{overlay}: cluster mode should be a Deployment of 2 or more members, got {w['kind']} "
             f"of {w['spec'].get('replicas', 1)}")
    strategy = w["spec"].get("strategy", {})
    if strategy.get("type") != "RollingUpdate" or strategy.get("rollingUpdate", {}).get("maxUnavailable") != 0:
        fail(f"{overlay}: cluster members roll one new pod in before an old one goes (RollingUpdate, "
             f"maxUnavailable 0), got {strategy}")
    if "--state.path" in a or STATE_DIR in mounts or by_kind.get("PersistentVolumeClaim") \
            or w["spec"].get("volumeClaimTemplates"):
        fail(f"{overlay}: cluster mode keeps its state in the database: no --state.path, state mount or PVC")
    if env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        fail(f"{overlay}: POD_NAME should be the pod name (fieldRef metadata.name): the member name")
    ref = env["MDE_CLUSTER_POSTGRES_URL"].get("valueFrom", {}).get("secretKeyRef", {})
    if not ref.get("name") or not ref.get("key"):
        fail(f"{overlay}: MDE_CLUSTER_POSTGRES_URL should come from a Secret (secretKeyRef), got {env['MDE_CLUSTER_POSTGRES_URL']}")
    cfg = (yaml.safe_load(configs[0]["data"]["config.yml"]) if configs else {}) or {}
    want = {"postgres_url": "${MDE_CLUSTER_POSTGRES_URL}", "member": "${POD_NAME}"}
    got = {k: (cfg.get("cluster") or {}).get(k) for k in want}
    if got != want:
        fail(f"{overlay}: the config's cluster section should be {want}, got {got}")
    pdbs = by_kind.get("PodDisruptionBudget", [])
    if len(pdbs) != 1:
        fail(f"{overlay}: cluster mode needs one PodDisruptionBudget, got {len(pdbs)}")
    else:
        sel = pdbs[0]["spec"].get("selector", {}).get("matchLabels", {})
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            fail(f"{overlay}: the PodDisruptionBudget does not select the members")
        if pdbs[0]["spec"].get("maxUnavailable") != 1:
            fail(f"{overlay}: the PodDisruptionBudget should allow one member away at a time (maxUnavailable 1)")
    print(f"{overlay}: cluster of {w['spec'].get('replicas')} members, URL from Secret "
          f"{ref.get('name')}/{ref.get('key')}, no state volume, PodDisruptionBudget")


def check_dashboards(rendered, directory, label="grafana_dashboard", value="1",
                     folder_annotation="grafana_folder"):
    """Every dashboard of DIRECTORY rendered as a ConfigMap with the sidecar's label and a folder
    annotation, its JSON equal to the file's; a GrafanaDashboard (grafana-operator) refers to
    one of those ConfigMaps and keys."""
    docs = load_all(rendered)
    want = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".json"):
            with open(os.path.join(directory, name)) as f:
                want[name] = json.load(f)
    got = {}
    for d in docs:
        if d["kind"] != "ConfigMap" or d["metadata"].get("labels", {}).get(label) != value:
            continue
        if not d["metadata"].get("annotations", {}).get(folder_annotation):
            fail(f"dashboards: ConfigMap {d['metadata']['name']} lacks the {folder_annotation} annotation")
        for key, text in d.get("data", {}).items():
            if key in got:
                fail(f"dashboards: {key} rendered twice")
            got[key] = (d["metadata"]["name"], json.loads(text))
    if sorted(got) != sorted(want):
        fail(f"dashboards: rendered {sorted(got)}, {directory} has {sorted(want)}")
    for key, (cm, board) in sorted(got.items()):
        if key in want and board != want[key]:
            fail(f"dashboards: {key} in ConfigMap {cm} differs from {directory}/{key}")
    refs = 0
    for d in docs:
        if d["kind"] == "GrafanaDashboard":
            ref = d["spec"].get("configMapRef", {})
            if got.get(ref.get("key"), ("",))[0] != ref.get("name"):
                fail(f"dashboards: GrafanaDashboard {d['metadata']['name']} refers to {ref}, no such dashboard ConfigMap")
            if not d["spec"].get("instanceSelector"):
                fail(f"dashboards: GrafanaDashboard {d['metadata']['name']} has no instanceSelector")
            refs += 1
    if refs and refs != len(got):
        fail(f"dashboards: {refs} GrafanaDashboards for {len(got)} dashboards")
    print(f"dashboards: {len(got)} ConfigMaps labelled {label}={value!r}, JSON equal to {directory}/"
          + (f", {refs} GrafanaDashboards referring to them" if refs else ""))
    return done("dashboards")


def rules_from_prometheusrule(rendered, out):
    rules = [d for d in load_all(rendered) if d["kind"] == "PrometheusRule"]
    if len(rules) != 1:
        fail(f"{rendered}: expected one PrometheusRule")
        return done("PrometheusRule")
    spec = rules[0]["spec"]
    with open("rules/mde-liveresponse.rules.yml") as f:
        source = yaml.safe_load(f)
    if spec != source:
        fail("PrometheusRule spec differs from rules/mde-liveresponse.rules.yml")
    with open(out, "w") as f:
        yaml.safe_dump(spec, f, sort_keys=False)
    print(f"PrometheusRule spec ({sum(len(g['rules']) for g in spec['groups'])} rules) equals "
          f"rules/mde-liveresponse.rules.yml; written to {out} for promtool")
    return done("PrometheusRule")


# --- docker compose --------------------------------------------------------------------------

def check_compose(path, schema_path):
    import jsonschema

    base = os.path.dirname(os.path.abspath(path))
    with open(path) as f:
        c = yaml.safe_load(f)
    with open(schema_path) as f:
        schema = json.load(f)
    # The packaged compose-spec schema predates the top-level `name` key; check it here.
    doc = dict(c)
    name = doc.pop("name", None)
    if name is not None and not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", str(name)):
        fail(f"compose: project name {name!r} is invalid")
    validator = jsonschema.Draft201909Validator(schema) if hasattr(jsonschema, "Draft201909Validator") \
        else jsonschema.Draft7Validator(schema)
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
        fail(f"compose schema: {'/'.join(map(str, e.path))}: {e.message}")

    services = c.get("services", {})
    for s in ("exporter", "prometheus", "grafana", "otel-collector", "jaeger"):
        if s not in services:
            fail(f"compose: service {s!r} missing")
    declared_volumes = set((c.get("volumes") or {}).keys())
    for name_, s in services.items():
        image = s.get("image", "")
        if "build" not in s and (not re.search(r":[A-Za-z0-9._-]+$", image) or image.endswith(":latest")):
            fail(f"compose: {name_}: image {image!r} should be pinned to a version tag")
        for p in s.get("ports", []):
            if not str(p).startswith("127.0.0.1:"):
                fail(f"compose: {name_}: port {p!r} should bind to 127.0.0.1 only")
        for dep in s.get("depends_on", []):
            if dep not in services:
                fail(f"compose: {name_}: depends_on unknown service {dep!r}")
        for v in s.get("volumes", []):
            src = str(v).split(":")[0]
            if src.startswith((".", "/")):
                if not os.path.exists(os.path.join(base, src)):
                    fail(f"compose: {name_}: bind mount source {src!r} does not exist")
            elif src not in declared_volumes:
                fail(f"compose: {name_}: named volume {src!r} not declared")
    exp = services.get("exporter", {})
    cmd = exp.get("command", [])
    if "--demo" not in cmd:
        fail("compose: exporter should run with --demo by default")
    if not any(str(v).endswith(":" + STATE_DIR) for v in exp.get("volumes", [])):
        fail(f"compose: exporter state {STATE_DIR} should be on a volume")
    build = exp.get("build", {})
    if not os.path.exists(os.path.join(base, build.get("context", "."), build.get("dockerfile", "Dockerfile"))):
        fail("compose: exporter build context/dockerfile not found")
    otlp = exp.get("environment", {}).get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    if not re.match(r"http://otel-collector:43(17|18)$", otlp):
        fail("compose: exporter OTEL_EXPORTER_OTLP_ENDPOINT should point at the otel-collector service")
    prom_mounts = " ".join(map(str, services.get("prometheus", {}).get("volumes", [])))
    if "rules/mde-liveresponse.rules.yml" not in prom_mounts:
        fail("compose: prometheus should mount rules/mde-liveresponse.rules.yml")
    # Exemplars end to end: Prometheus keeps them, a current trace backend receives the spans.
    prom_flags = [str(a) for a in services.get("prometheus", {}).get("command", [])]
    features = {f for a in prom_flags if a.startswith("--enable-feature=")
                for f in a.split("=", 1)[1].split(",")}
    if "exemplar-storage" not in features:
        fail("compose: prometheus needs --enable-feature=exemplar-storage (exemplars link metrics to traces)")
    trace_image = services.get("jaeger", {}).get("image", "")
    m = re.fullmatch(r"(?:[a-z0-9.-]+/)?jaegertracing/jaeger:(\d+)\.\d+\.\d+", trace_image)
    if not m or int(m.group(1)) < 2:
        fail(f"compose: jaeger should run Jaeger v2 (jaegertracing/jaeger:2.x.y), not {trace_image!r}: "
             "v1's all-in-one is end of life")
    graf_mounts = " ".join(map(str, services.get("grafana", {}).get("volumes", [])))
    if "../dashboards:" not in graf_mounts or "provisioning" not in graf_mounts:
        fail("compose: grafana should mount the dashboards and the provisioning directory")
    print(f"compose: {len(services)} services ({', '.join(services)}), volumes {sorted(declared_volumes)}")
    return done("compose")


# The exemplar label the exporter writes the trace id into (src/metrics.rs TraceLabel).
EXEMPLAR_LABEL = "trace_id"
TRACE_TYPES = ("jaeger", "tempo")


def check_grafana_provisioning(d, compose):
    with open(compose) as f:
        services = yaml.safe_load(f)["services"]
    graf = services["grafana"]
    mounts = dict(str(v).split(":")[:2] for v in graf.get("volumes", []))
    dash_target = mounts.get("../dashboards")
    datasources = []
    for path in sorted(os.listdir(os.path.join(d, "datasources"))):
        with open(os.path.join(d, "datasources", path)) as f:
            ds = yaml.safe_load(f)
        if ds.get("apiVersion") != 1 or not ds.get("datasources"):
            fail(f"datasources/{path}: apiVersion 1 with a datasources list expected")
        for x in ds.get("datasources", []):
            datasources.append((path, x))
            if x.get("type") not in ("prometheus",) + TRACE_TYPES:
                fail(f"datasources/{path}: {x.get('name')} is of type {x.get('type')!r}, not prometheus, "
                     f"{' or '.join(TRACE_TYPES)}")
            host = re.match(r"https?://([^:/]+)", x.get("url", ""))
            if not host or host.group(1) not in services:
                fail(f"datasources/{path}: url {x.get('url')!r} is not a compose service")
        print(f"grafana datasources/{path}: {[x.get('name') for x in ds.get('datasources', [])]}")
    uids = [x.get("uid") for _, x in datasources]
    if None in uids or len(set(uids)) != len(uids):
        fail(f"datasources: every datasource needs its own uid, got {uids}")
    traces = {x.get("uid"): x for _, x in datasources if x.get("type") in TRACE_TYPES}
    if not traces:
        fail("datasources: no trace datasource (jaeger or tempo) for the exemplars to link to")
    for path, x in datasources:
        if x.get("type") != "prometheus":
            continue
        dests = (x.get("jsonData") or {}).get("exemplarTraceIdDestinations") or []
        ours = [e for e in dests if e.get("name") == EXEMPLAR_LABEL]
        if len(ours) != 1:
            fail(f"datasources/{path}: {x.get('name')} needs one exemplarTraceIdDestinations entry named "
                 f"{EXEMPLAR_LABEL!r} (the exporter's exemplar label), got {dests}")
        for e in ours:
            if e.get("datasourceUid") not in traces:
                fail(f"datasources/{path}: exemplar destination {e} is not the uid of a trace datasource "
                     f"{sorted(traces)}")
            else:
                print(f"grafana: {x.get('name')} exemplars {EXEMPLAR_LABEL} -> "
                      f"{traces[e['datasourceUid']].get('name')} ({traces[e['datasourceUid']].get('type')})")
    for path in sorted(os.listdir(os.path.join(d, "dashboards"))):
        with open(os.path.join(d, "dashboards", path)) as f:
            p = yaml.safe_load(f)
        for prov in p.get("providers", []):
            if prov.get("type") != "file" or prov.get("options", {}).get("path") != dash_target:
                fail(f"dashboards/{path}: provider {prov.get('name')} should read {dash_target} (the compose mount)")
        print(f"grafana dashboards/{path}: providers {[x.get('name') for x in p.get('providers', [])]}")
    if graf.get("environment", {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH", "").rsplit("/", 1)[-1] \
            not in os.listdir("dashboards"):
        fail("compose: grafana home dashboard is not one of dashboards/*.json")
    return done("grafana provisioning")


def check_otel(path, compose):
    with open(path) as f:
        c = yaml.safe_load(f)
    with open(compose) as f:
        services = yaml.safe_load(f)["services"]
    for pname, p in c.get("service", {}).get("pipelines", {}).items():
        for kind in ("receivers", "processors", "exporters"):
            for comp in p.get(kind, []):
                if comp not in (c.get(kind) or {}):
                    fail(f"otel: pipeline {pname} uses undefined {kind[:-1]} {comp!r}")
    if "otlp" not in (c.get("receivers") or {}):
        fail("otel: needs an otlp receiver")
    for name, e in (c.get("exporters") or {}).items():
        ep = (e or {}).get("endpoint")
        if ep and ep.split(":")[0] not in services:
            fail(f"otel: exporter {name} endpoint {ep!r} is not a compose service")
    print(f"otel: pipelines {list(c.get('service', {}).get('pipelines', {}))}")
    return done("otel collector config")


# --- Dockerfile and systemd --------------------------------------------------------------------

def _instructions(path):
    """A Dockerfile's instructions as (INSTRUCTION, arguments), continuations joined."""
    with open(path) as f:
        text = re.sub(r"\\\n", " ", f.read())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split()[0].upper(), " ".join(ln.split()[1:])) for ln in lines]


OCI_LABELS = ("org.opencontainers.image.source", "org.opencontainers.image.revision",
              "org.opencontainers.image.version", "org.opencontainers.image.licenses")


def check_dockerfile(path, containerfile=None):
    """deploy/Dockerfile: multi-stage, its runtime stage non-root with the state volume, and,
    given deploy/Containerfile, that stage equal to it (the same image by Docker and buildah)."""
    instr = _instructions(path)
    froms = [a for i, a in instr if i == "FROM"]
    if len(froms) < 2:
        fail("Dockerfile: should be multi-stage")
    final = len(instr) - 1 - [i for i, _ in instr][::-1].index("FROM")
    tail = instr[final:]
    users = [a for i, a in tail if i == "USER"]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        fail("Dockerfile: the runtime stage must switch to a non-root USER")
    if ("VOLUME", STATE_DIR) not in tail:
        fail(f"Dockerfile: VOLUME {STATE_DIR} missing in the runtime stage")
    if ("EXPOSE", "9717") not in tail:
        fail("Dockerfile: EXPOSE 9717 missing")
    ep = [a for i, a in tail if i == "ENTRYPOINT"]
    if not ep or APP not in ep[-1]:
        fail("Dockerfile: ENTRYPOINT should be the exporter binary")
    labels = " ".join(a for i, a in tail if i == "LABEL")
    for k in OCI_LABELS:
        if k + "=" not in labels:
            fail(f"Dockerfile: label {k} missing in the runtime stage")
    for i, a in instr:
        if i == "COPY" and "--from" not in a:
            for src in a.split()[:-1]:
                if not src.startswith("--") and not os.path.exists(src):
                    fail(f"Dockerfile: COPY source {src!r} does not exist in the repository root")
    if containerfile:
        # The runtime stage is the Containerfile with its context's files taken from the
        # builder stage's /out (deploy/image/rootfs.sh wrote both).
        runtime = [(i, re.sub(r"--from=builder (.*?)/out/", r"\1", a)) if i == "COPY" else (i, a)
                   for i, a in tail]
        cf = _instructions(containerfile)
        if runtime != cf:
            for n, (d, c) in enumerate(zip(runtime + [None] * len(cf), cf + [None] * len(runtime))):
                if d != c:
                    fail(f"Dockerfile: runtime stage differs from {containerfile} at instruction {n + 1}: "
                         f"{d} != {c}")
                    break
        else:
            print(f"Dockerfile: runtime stage = {containerfile} ({len(cf)} instructions)")
    print(f"Dockerfile: stages {froms}, runtime user {users[-1] if users else None}")
    return done("Dockerfile")


def check_systemd(path):
    with open(path) as f:
        text = re.sub(r"\\\n", " ", f.read())
    kv = {}
    for ln in text.splitlines():
        if "=" in ln and not ln.lstrip().startswith(("#", ";", "[")):
            k, _, v = ln.partition("=")
            kv.setdefault(k.strip(), []).append(v.strip())
    want = {"ProtectSystem": "strict", "NoNewPrivileges": "yes", "ProtectHome": "yes", "PrivateTmp": "yes",
            "StateDirectory": APP}
    for k, v in want.items():
        if v not in kv.get(k, []):
            fail(f"systemd: {k}={v} missing")
    if "yes" not in kv.get("DynamicUser", []) and not kv.get("User"):
        fail("systemd: needs DynamicUser=yes or a dedicated User=")
    start = " ".join(kv.get("ExecStart", []))
    if f"--state.path={STATE_DIR}/" not in start:
        fail(f"systemd: ExecStart should keep state in the StateDirectory ({STATE_DIR})")
    print(f"systemd: {len(kv)} directives, hardening present")
    return done("systemd unit")


def shards(binary, rendered, n_tenants):
    import socket
    import subprocess
    import tempfile
    import time
    import urllib.request

    sts = [d for d in load_all(rendered) if d["kind"] == "StatefulSet"][0]
    name, replicas = sts["metadata"]["name"], sts["spec"]["replicas"]
    count = int(args_of(sts["spec"]["template"]["spec"]["containers"][0])["--shard.count"])
    tenants = [f"tenant-{i:02d}" for i in range(int(n_tenants))]
    tmp = tempfile.mkdtemp()
    config = os.path.join(tmp, "config.yml")
    with open(config, "w") as f:
        # Nothing listens on port 9 of loopback: polls fail fast, which is fine; only which
        # tenants each shard reports matters.
        yaml.safe_dump({"poll_interval": "1s", "tenants": [
            {"name": t, "tenant_id": f"00000000-0000-0000-0000-{i:012d}",
             "client_id": "11111111-1111-1111-1111-111111111111", "client_secret": "not-a-secret",
             "api_url": "http://127.0.0.1:9", "login_url": "http://127.0.0.1:9",
             "audience": "http://127.0.0.1:9"} for i, t in enumerate(tenants)]}, f, sort_keys=False)
    procs, ports = [], []
    try:
        for ordinal in range(replicas):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            env = dict(os.environ, HOSTNAME=f"{name}-{ordinal}")
            procs.append(subprocess.Popen(
                [binary, f"--config.file={config}", f"--shard.count={count}",
                 f"--state.path={tmp}/state-{ordinal}.redb", f"--web.listen-address=127.0.0.1:{port}",
                 "--log.level=error"], env=env, stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/log-{ordinal}", "w")))
            ports.append(port)
        served = {}
        deadline = time.monotonic() + 30
        for ordinal, port in enumerate(ports):
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                        text = r.read().decode()
                    got = set(re.findall(r'mde_exporter_poll_success\{[^}]*tenant="([^"]+)"', text))
                    # Wait until this shard has polled all the tenants it has (two scrapes agree).
                    time.sleep(1.5)
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                        again = set(re.findall(r'mde_exporter_poll_success\{[^}]*tenant="([^"]+)"', r.read().decode()))
                    if got and got == again:
                        served[ordinal] = got
                        break
                except OSError:
                    pass
                if procs[ordinal].poll() is not None:
                    fail(f"shard {ordinal} exited: {open(f'{tmp}/log-{ordinal}').read()[-500:]}")
                    break
                if time.monotonic() > deadline:
                    served[ordinal] = set()
                    break
                time.sleep(0.5)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    if replicas != count:
        fail(f"replicas {replicas} != --shard.count {count}")
    for t in tenants:
        owners = [o for o, ts in served.items() if t in ts]
        if len(owners) != 1:
            fail(f"tenant {t} is served by shards {owners}, expected exactly one")
    for o, ts in sorted(served.items()):
        print(f"shard {o} (HOSTNAME={name}-{o}): {len(ts)} tenants: {' '.join(sorted(ts))}")
    return done(f"sharding: {len(tenants)} tenants over {count} shards, each on exactly one")


def main() -> int:
    cmd, *a = sys.argv[1:]
    return {
        "k8s": check_k8s, "rules-from-prometheusrule": rules_from_prometheusrule, "compose": check_compose,
        "grafana-provisioning": check_grafana_provisioning, "otel": check_otel, "dockerfile": check_dockerfile,
        "systemd": check_systemd, "shards": shards, "dashboards": check_dashboards,
    }[cmd](*a)


if __name__ == "__main__":
    sys.exit(main())
