// Monitoring mixin of mde-liveresponse-exporter: Prometheus alerts, recording rules and Grafana
// dashboards, configured by _config (config.libsonnet).
//
//   prometheusAlerts    alerts.libsonnet       (group mde-liveresponse.alerts)
//   prometheusRules     rules.libsonnet        (groups mde-liveresponse.thresholds and .records)
//   grafanaDashboards   dashboards.libsonnet   (file name -> dashboard JSON)
//   tests.jsonnet       asserts on _config overrides, evaluated on every render
//   lib/                helpers: durations (util), panels and layout (panels)
//
// scripts/render-mixin.sh renders the defaults into the committed rules/mde-liveresponse.rules.yml,
// dashboards/*.json and deploy/kubernetes/base/prometheusrule.yaml; CI (check-rules.sh,
// check-dashboards.sh) fails when those differ from the render. Never edit them by hand.
//
// How to add an alert (e.g. on mde_liveresponse_actions_in_flight):
//   1. config.libsonnet: add its knobs, `<name>Severity` and `<name>For` (and any threshold).
//   2. alerts.libsonnet: add an `alert('MdeLiveResponse...', c.<name>Severity, c.<name>For,
//      expr, summary, description)` entry. Names are CamelCase with an MdeLiveResponse, MdeApi or
//      MdeExporter prefix; the runbook_url is derived from the name. A recording rule it needs
//      goes in rules.libsonnet (level:metric:operations).
//   3. docs/runbook.md: add a `### <AlertName>` section (Meaning, Impact, What to
//      check, How to fix); the runbook_url points at it.
//   4. rules/tests/<area>.test.yml: a promtool case where it fires (with its exact labels and
//      annotations) and one where it must not.
//   5. Run scripts/render-mixin.sh, then scripts/check-rules.sh. If the demo can make the alert
//      fire, add it to the required alerts of scripts/e2e-prometheus.sh. A knob that changes
//      more than a number (a selector, a duration quoted in the description) deserves an
//      assert in tests.jsonnet.
// check_rules.py fails on a missing severity, annotation, runbook section or test case.
(import 'config.libsonnet')
+ (import 'rules.libsonnet')
+ (import 'alerts.libsonnet')
+ (import 'dashboards.libsonnet')
