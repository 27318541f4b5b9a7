#!/usr/bin/env python3
"""Checks of the Helm chart's rendered manifests for scripts/check-helm.sh (needs PyYAML).

Subcommands (each prints what it checked, exits 1 on any failure):
  chart CASE RENDERED.yaml
      `helm template` output of ci/CASE-values.yaml: the structural checks the kustomize
      overlays get (scripts/check_deploy.py k8s), then what this case must render (StatefulSet
      and shard flags, workload identity, Secret, certificate mount, NetworkPolicy, PDB, cluster
      mode...).
  drift CASE CHART.yaml KUSTOMIZE.yaml KUSTOMIZE_CONFIG.yml
      the chart and the kustomize overlay describe the same exporter: image, args, env, ports,
      probes, resources, security contexts, mounts, state volume, Service, ServiceMonitor,
      PrometheusRule (equal to rules/mde-liveresponse.rules.yml) and the exporter config.
"""
import os
import sys

import yaml

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_deploy  # noqa: E402  (same directory; its fail()/errors are shared)

fail = check_deploy.fail
done = check_deploy.done
load_all = check_deploy.load_all
args_of = check_deploy.args_of
APP = check_deploy.APP

# Which kustomize overlay (check_deploy.py k8s rules) each chart case corresponds to.
OVERLAY = {"default": "single", "sharded": "sharded", "workload-identity": "workload-identity",
           "cluster": "cluster"}


def by_kind(docs):
    out = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def one(kinds, kind, case):
    got = kinds.get(kind, [])
    if len(got) != 1:
        fail(f"{case}: expected one {kind}, got {len(got)}")
        return {}
    return got[0]


def workload(kinds):
    w = kinds.get("Deployment", []) + kinds.get("StatefulSet", [])
    return w[0] if len(w) == 1 else None


def check_chart(case, rendered):
    docs = load_all(rendered)
    kinds = by_kind(docs)
    print(f"chart {case}: {len(docs)} objects: "
          + ", ".join(f"{k}" + (f" x{len(v)}" if len(v) > 1 else "") for k, v in sorted(kinds.items())))
    if case in OVERLAY:
        # The same structural rules as the kustomize overlay of that shape.
        _as_overlay(case, rendered)
    w = workload(kinds)
    if w is None:
        fail(f"{case}: expected one Deployment or StatefulSet")
        return done(f"chart {case}")
    pod = w["spec"]["template"]["spec"]
    c = pod["containers"][0]
    a = args_of(c)
    env = {e["name"]: e for e in c.get("env", [])}
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    sel = w["spec"]["selector"]["matchLabels"]
    pod_labels = w["spec"]["template"]["metadata"]["labels"]

    # Every object of the release carries the chart's labels.
    for d in docs:
        labels = d["metadata"].get("labels", {})
        if labels.get("app.kubernetes.io/instance") != APP or labels.get("helm.sh/chart", "").split("-")[-1] == "":
            fail(f"{case}: {d['kind']} {d['metadata']['name']} lacks the instance/chart labels")

    # Objects every case has.
    for kind in ("ServiceAccount", "Service", "PrometheusRule", "NetworkPolicy", "PodDisruptionBudget"):
        one(kinds, kind, case)
    if len(config_maps(kinds)) != 1:
        fail(f"{case}: expected one ConfigMap with config.yml, got {len(config_maps(kinds))}")
    sm = [s for s in kinds.get("ServiceMonitor", []) if not s["metadata"]["name"].endswith("-probe")]
    if len(sm) != 1:
        fail(f"{case}: expected one (non-probe) ServiceMonitor, got {len(sm)}")
    for s in kinds.get("ServiceMonitor", []):
        if s["spec"].get("jobLabel") != "app.kubernetes.io/job":
            fail(f"{case}: ServiceMonitor {s['metadata']['name']} jobLabel is not app.kubernetes.io/job")
    svc = one(kinds, "Service", case)
    if svc.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/job") != APP:
        fail(f"{case}: Service label app.kubernetes.io/job should be {APP} (the job label the alerts match)")
    if sm and sm[0]["spec"]["selector"]["matchLabels"] != sel:
        fail(f"{case}: ServiceMonitor selector differs from the workload selector")

    # PDB and NetworkPolicy select the pods; the NetworkPolicy opens the metrics port and egress
    # for DNS and HTTPS.
    pdb = one(kinds, "PodDisruptionBudget", case)
    if pdb and pdb["spec"]["selector"]["matchLabels"] != sel:
        fail(f"{case}: PodDisruptionBudget selector differs from the workload selector")
    np_ = one(kinds, "NetworkPolicy", case)
    if np_:
        if np_["spec"]["podSelector"]["matchLabels"] != sel:
            fail(f"{case}: NetworkPolicy podSelector differs from the workload selector")
        if sorted(np_["spec"].get("policyTypes", [])) != ["Egress", "Ingress"]:
            fail(f"{case}: NetworkPolicy should restrict both Ingress and Egress")
        ingress_ports = [p.get("port") for r in np_["spec"].get("ingress", []) for p in r.get("ports", [])]
        if ingress_ports != ["metrics"]:
            fail(f"{case}: NetworkPolicy ingress should allow the metrics port only, got {ingress_ports}")
        egress_ports = {(p.get("port"), p.get("protocol")) for r in np_["spec"].get("egress", [])
                        for p in r.get("ports", [])}
        for need in ((53, "UDP"), (53, "TCP"), (443, "TCP")):
            if need not in egress_ports:
                fail(f"{case}: NetworkPolicy egress misses {need[0]}/{need[1]}")

    # Pods roll when the config changes.
    if "checksum/config" not in w["spec"]["template"]["metadata"].get("annotations", {}):
        fail(f"{case}: pod template lacks the checksum/config annotation")
    if pod.get("securityContext", {}).get("runAsNonRoot") is not True \
            or c.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
        fail(f"{case}: pods must run as non-root with a read-only root filesystem")
    if not c.get("resources", {}).get("limits", {}).get("memory"):
        fail(f"{case}: the container needs a memory limit")

    if case == "default":
        if w["kind"] != "Deployment":
            fail(f"{case}: shards 1 should render a Deployment")
        pvc = one(kinds, "PersistentVolumeClaim", case)
        if pvc.get("metadata", {}).get("annotations", {}).get("helm.sh/resource-policy") != "keep":
            fail(f"{case}: the state PVC should be kept on uninstall (helm.sh/resource-policy: keep)")
        if volumes.get("state", {}).get("persistentVolumeClaim", {}).get("claimName") != pvc.get("metadata", {}).get("name"):
            fail(f"{case}: the state volume is not the chart's PVC")
        if "Secret" in kinds:
            fail(f"{case}: the default must not create a Secret (credentials.existingSecret)")
        ref = env.get("MDE_CONTOSO_CLIENT_SECRET", {}).get("valueFrom", {}).get("secretKeyRef", {})
        if ref != {"name": f"{APP}-credentials", "key": "contoso-client-secret"}:
            fail(f"{case}: MDE_CONTOSO_CLIENT_SECRET should come from {APP}-credentials/contoso-client-secret, got {ref}")
        if len(kinds.get("ServiceMonitor", [])) != 1:
            fail(f"{case}: the probe ServiceMonitor should be off by default")
        if "OTEL_METRICS_EXPORTER" in env:
            fail(f"{case}: the OTLP metrics push should be off by default (otlpMetrics.endpoint empty)")
    elif case == "sharded":
        if w["kind"] != "StatefulSet" or w["spec"].get("replicas") != 3:
            fail(f"{case}: shards 3 should render a StatefulSet of 3")
        if a.get("--shard.count") != "3" or "--shard.index" in a:
            fail(f"{case}: args should have --shard.count=3 and no --shard.index, got {c.get('args')}")
        if env.get("HOSTNAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
            fail(f"{case}: HOSTNAME should be the pod name (fieldRef metadata.name)")
        if "PersistentVolumeClaim" in kinds or "state" in volumes:
            fail(f"{case}: shards take their state volume from volumeClaimTemplates, not a shared PVC")
        vct = [v["metadata"]["name"] for v in w["spec"].get("volumeClaimTemplates", [])]
        if vct != ["state"]:
            fail(f"{case}: volumeClaimTemplates should be [state], got {vct}")
        for s in kinds.get("ServiceMonitor", []) + kinds.get("PrometheusRule", []):
            if s["metadata"]["labels"].get("release") != "kube-prometheus-stack":
                fail(f"{case}: {s['kind']} lacks the release label from its values")
        src = np_.get("spec", {}).get("ingress", [{}])[0].get("from", [])
        if not src or "namespaceSelector" not in src[0]:
            fail(f"{case}: NetworkPolicy ingress should be limited to networkPolicy.ingressFrom")
    elif case == "workload-identity":
        sa = one(kinds, "ServiceAccount", case)
        if sa.get("metadata", {}).get("annotations", {}).get("azure.workload.identity/client-id") \
                != "66666666-7777-8888-9999-000000000000":
            fail(f"{case}: ServiceAccount lacks the azure.workload.identity/client-id annotation")
        if sa.get("metadata", {}).get("labels", {}).get("azure.workload.identity/use") != "true":
            fail(f"{case}: ServiceAccount lacks the azure.workload.identity/use label")
        if pod_labels.get("azure.workload.identity/use") != "true":
            fail(f"{case}: pods lack the azure.workload.identity/use label (the webhook's trigger)")
        if any("secretKeyRef" in e.get("valueFrom", {}) for e in env.values()) or "Secret" in kinds:
            fail(f"{case}: workload identity needs no Secret")
    elif case == "certificate":
        secret = one(kinds, "Secret", case)
        if secret.get("stringData") != {"contoso-client-secret": "not-a-real-secret"}:
            fail(f"{case}: the created Secret should hold credentials.secrets")
        ref = env.get("MDE_CONTOSO_CLIENT_SECRET", {}).get("valueFrom", {}).get("secretKeyRef", {})
        if ref.get("name") != secret.get("metadata", {}).get("name"):
            fail(f"{case}: the env refers to {ref.get('name')}, not the created Secret")
        m = mounts.get("certificates", {})
        if m.get("mountPath") != "/etc/mde-liveresponse-exporter/certs" or m.get("readOnly") is not True:
            fail(f"{case}: certificates should be mounted read-only at /etc/mde-liveresponse-exporter/certs")
        if volumes.get("certificates", {}).get("secret", {}).get("secretName") != "mde-liveresponse-exporter-certificates":
            fail(f"{case}: the certificates volume should be the Secret certificates.secretName")
        cfg = yaml.safe_load(one(kinds, "ConfigMap", case).get("data", {}).get("config.yml", "")) or {}
        for t in cfg.get("tenants", []):
            for k in ("certificate_file", "key_file"):
                p = (t.get("auth") or {}).get(k)
                if p and not p.startswith(m.get("mountPath", "?") + "/"):
                    fail(f"{case}: tenant {t['name']} {k} {p} is not under the certificates mount")
        if env.get("OTEL_EXPORTER_OTLP_ENDPOINT", {}).get("value") != "http://otel-collector.observability:4317":
            fail(f"{case}: otlpEndpoint should set OTEL_EXPORTER_OTLP_ENDPOINT")
        push = {k: env.get(k, {}).get("value") for k in
                ("OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_METRIC_EXPORT_INTERVAL")}
        if push != {"OTEL_METRICS_EXPORTER": "otlp",
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://prometheus.monitoring:9090/api/v1/otlp/v1/metrics",
                    "OTEL_METRIC_EXPORT_INTERVAL": "30000"}:
            fail(f"{case}: otlpMetrics should set the OTLP metrics push variables, got {push}")
        probe = [s for s in kinds.get("ServiceMonitor", []) if s["metadata"]["name"].endswith("-probe")]
        if len(probe) != 1:
            fail(f"{case}: probeServiceMonitor.enabled should render one -probe ServiceMonitor")
        else:
            targets = [e.get("params", {}).get("target") for e in probe[0]["spec"]["endpoints"]]
            paths = {e.get("path") for e in probe[0]["spec"]["endpoints"]}
            if targets != [["contoso"], ["fabrikam"]] or paths != {"/probe"}:
                fail(f"{case}: probe ServiceMonitor should scrape /probe?target= each tenant, got {targets} {paths}")
        pvc = one(kinds, "PersistentVolumeClaim", case)
        if pvc.get("spec", {}).get("storageClassName") != "managed-csi" \
                or pvc.get("spec", {}).get("resources", {}).get("requests", {}).get("storage") != "2Gi":
            fail(f"{case}: PVC should take persistence.storageClassName and size")
    elif case == "cluster":
        # Cluster mode (#31); the rules shared with the kustomize overlay ran above
        # (check_deploy.check_cluster); here what the values choose.
        if w["kind"] != "Deployment" or w["spec"].get("replicas") != 2:
            fail(f"{case}: cluster.enabled should render a Deployment of cluster.replicas (default 2)")
        if "PersistentVolumeClaim" in kinds or "state" in volumes:
            fail(f"{case}: cluster mode has no PVC and no state volume")
        ref = env.get("MDE_CLUSTER_POSTGRES_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
        if ref != {"name": "mde-liveresponse-exporter-postgres", "key": "postgres-url"}:
            fail(f"{case}: MDE_CLUSTER_POSTGRES_URL should come from cluster.existingSecret/secretKey, got {ref}")
        cfg = yaml.safe_load(config_maps(kinds)[0]["data"]["config.yml"]) or {}
        if (cfg.get("cluster") or {}).get("lease_duration") != "30s":
            fail(f"{case}: the config's cluster.lease_duration should be cluster.leaseDuration (30s)")
        egress_ports = {(p.get("port"), p.get("protocol")) for r in np_.get("spec", {}).get("egress", [])
                        for p in r.get("ports", [])}
        if (5432, "TCP") not in egress_ports:
            fail(f"{case}: the NetworkPolicy should let the members reach PostgreSQL (5432/TCP)")
        spread = pod.get("topologySpreadConstraints", [])
        if not spread or spread[0].get("labelSelector", {}).get("matchLabels") != sel:
            fail(f"{case}: members should be spread over nodes (topologySpreadConstraints on the pods)")
        if len(kinds.get("GrafanaDashboard", [])) != 4:
            fail(f"{case}: dashboards.grafanaOperator.enabled should render a GrafanaDashboard per dashboard")
    else:
        fail(f"unknown case {case}")
    return done(f"chart {case}")


def config_maps(kinds):
    """The ConfigMap(s) holding the exporter's config.yml (dashboards have their own)."""
    return [c for c in kinds.get("ConfigMap", []) if "config.yml" in c.get("data", {})]


def _as_overlay(case, rendered):
    """check_deploy.check_k8s's rules for the overlay of the same shape, on the chart's output."""
    # check_k8s forbids a Secret and counts exactly one ServiceMonitor: both hold for these cases.
    rc_before = len(check_deploy.errors)
    check_deploy.check_k8s(f"{OVERLAY[case]}", rendered)
    if len(check_deploy.errors) != rc_before:
        print(f"chart {case}: fails the rules of overlay {OVERLAY[case]} (above)")


def container(w):
    return w["spec"]["template"]["spec"]["containers"][0]


def check_drift(case, chart_rendered, kustomize_rendered, kustomize_config):
    chart, kust = by_kind(load_all(chart_rendered)), by_kind(load_all(kustomize_rendered))
    wc, wk = workload(chart), workload(kust)
    if wc is None or wk is None:
        fail(f"drift {case}: a workload is missing")
        return done(f"drift {case}")
    same = []

    def eq(what, a, b):
        if a != b:
            fail(f"drift {case}: {what} differs: chart {a!r} != kustomize {b!r}")
        else:
            same.append(what)

    eq("workload kind", wc["kind"], wk["kind"])
    eq("workload name", wc["metadata"]["name"], wk["metadata"]["name"])
    for k in ("replicas", "strategy", "podManagementPolicy", "serviceName"):
        eq(f"spec.{k}", wc["spec"].get(k), wk["spec"].get(k))
    pc, pk = wc["spec"]["template"]["spec"], wk["spec"]["template"]["spec"]
    for k in ("securityContext", "serviceAccountName", "automountServiceAccountToken"):
        eq(f"pod {k}", pc.get(k), pk.get(k))
    cc, ck = container(wc), container(wk)
    for k in ("name", "image", "args", "ports", "readinessProbe", "livenessProbe", "resources",
              "securityContext", "volumeMounts"):
        eq(f"container {k}", cc.get(k), ck.get(k))
    # env: the same variables from the same Secret keys (the chart's Secret name comes from the
    # release: mde-liveresponse-exporter-credentials for the release mde-liveresponse-exporter).
    eq("container env", cc.get("env", []), ck.get("env", []))
    vc = {v["name"]: {k: x for k, x in v.items() if k != "name"} for v in pc.get("volumes", [])}
    vk = {v["name"]: {k: x for k, x in v.items() if k != "name"} for v in pk.get("volumes", [])}
    eq("volume names", sorted(vc), sorted(vk))
    if "state" in vc or "state" in vk:
        eq("state volume", vc.get("state"), vk.get("state"))

    def vct(w):
        return [{"name": v["metadata"]["name"], "spec": v["spec"]} for v in w["spec"].get("volumeClaimTemplates", [])]
    eq("volumeClaimTemplates", vct(wc), vct(wk))
    pvc_c = [p["spec"] for p in chart.get("PersistentVolumeClaim", [])]
    pvc_k = [p["spec"] for p in kust.get("PersistentVolumeClaim", [])]
    eq("PVC spec", pvc_c, pvc_k)

    sc, sk = chart["Service"][0], kust["Service"][0]
    eq("Service name", sc["metadata"]["name"], sk["metadata"]["name"])
    eq("Service ports", sc["spec"]["ports"], sk["spec"]["ports"])
    eq("Service clusterIP", sc["spec"].get("clusterIP"), sk["spec"].get("clusterIP"))
    smc = [s for s in chart["ServiceMonitor"] if not s["metadata"]["name"].endswith("-probe")][0]
    eq("ServiceMonitor endpoints", smc["spec"]["endpoints"], kust["ServiceMonitor"][0]["spec"]["endpoints"])
    eq("PrometheusRule spec", chart["PrometheusRule"][0]["spec"], kust["PrometheusRule"][0]["spec"])
    with open("rules/mde-liveresponse.rules.yml") as f:
        eq("PrometheusRule spec = rules/mde-liveresponse.rules.yml", chart["PrometheusRule"][0]["spec"],
           yaml.safe_load(f))
    sac, sak = chart["ServiceAccount"][0], kust["ServiceAccount"][0]
    eq("ServiceAccount annotations", sac["metadata"].get("annotations"), sak["metadata"].get("annotations"))
    eq("ServiceAccount automount", sac.get("automountServiceAccountToken"), sak.get("automountServiceAccountToken"))
    eq("pod label azure.workload.identity/use",
       wc["spec"]["template"]["metadata"]["labels"].get("azure.workload.identity/use"),
       wk["spec"]["template"]["metadata"]["labels"].get("azure.workload.identity/use"))
    with open(kustomize_config) as f:
        eq("exporter config", yaml.safe_load(config_maps(chart)[0]["data"]["config.yml"]), yaml.safe_load(f))
    if "PodDisruptionBudget" in kust:
        eq("PodDisruptionBudget maxUnavailable", chart["PodDisruptionBudget"][0]["spec"].get("maxUnavailable"),
           kust["PodDisruptionBudget"][0]["spec"].get("maxUnavailable"))
    eq("pod topologySpreadConstraints (count)", len(pc.get("topologySpreadConstraints", [])),
       len(pk.get("topologySpreadConstraints", [])))
    print(f"drift {case}: chart and kustomize agree on {len(same)} points")
    return done(f"drift {case}")


def main() -> int:
    cmd, *a = sys.argv[1:]
    return {"chart": check_chart, "drift": check_drift}[cmd](*a)


if __name__ == "__main__":
    sys.exit(main())
