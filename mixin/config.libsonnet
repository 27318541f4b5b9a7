// The knobs of the mde-liveresponse-exporter mixin. Override any of them from your own jsonnet:
//
//   local mixin = (import 'mixin/mixin.libsonnet') + {
//     _config+:: {
//       jobSelector: 'job="mde-lr"',
//       scriptFailedSeverity: 'critical',   // page on failed scripts
//     },
//   };
//   mixin.prometheusAlerts
//
// The committed rules/ and dashboards/ are these defaults rendered by scripts/render-mixin.sh.
// Durations are Prometheus durations with one unit ('90s', '15m', '2h', '1d'); an empty or zero
// `...For` leaves the alert's `for:` out, so it fires on the first evaluation.
{
  _config+:: {
    // Selector of the Prometheus job(s) that scrape the exporter, for the one series the rules
    // read that is not the exporter's own: `up`, in MdeExporterDown. Every other series is an
    // mde_* metric that only this exporter exposes, so the other alerts work whatever the job is
    // called. The dashboards find their jobs themselves (their `job` variable lists the jobs
    // that expose mde_exporter_build_info).
    jobSelector: 'job=~"mde-liveresponse-exporter"',

    // Where each alert's runbook_url points; %s is the alert name in lower case (the anchor of
    // its `### AlertName` section in docs/runbook.md).
    runbookURLPattern: 'https://github.com/mde-liveresponse-exporter/mde-liveresponse-exporter/blob/main/docs/runbook.md#%s',

    // The exporter's URL as the people who get the alerts reach it (its --web.external-url;
    // the default listen port is 9717). The failed-script, script-errors and not-run alerts
    // link to its transcript page from a `transcript_url` annotation:
    // <exporterExternalURL>/transcripts?tenant=..&machine=..&script=.. (#22)
    exporterExternalURL: 'http://localhost:9717',

    // How many failure signatures (why the script fails, by machines:
    // mde_liveresponse_script_failure_signatures) the failed-script and script-errors alerts
    // name in their description, most machines first; the first is also the `top_signature`
    // annotation, linked by `signature_url` to the exporter's page of its machines. (#36)
    alertTopSignatures: 3,

    // --- alerts: severity, `for:` and thresholds, one block per alert -----------------------

    // A script's last run exited non-zero on some machine. One failure is worth a look, not a
    // page; set the severity to 'critical' (and, if you like, the `for:` to '') to page.
    scriptFailedSeverity: 'warning',
    scriptFailedFor: '15m',

    // A script's last run wrote to its error stream.
    scriptErrorsSeverity: 'warning',
    scriptErrorsFor: '',

    // Command results given up, counted over this window.
    resultFetchFailingWindow: '15m',
    resultFetchFailingSeverity: 'warning',
    resultFetchFailingFor: '5m',

    // Share of a quota window no longer available (1 - remaining/limit), per window. Rendered as
    // recorded constants (mde:api_quota_nearly_exhausted_threshold:ratio) so that a Prometheus
    // can also override them per tenant without editing the alert.
    quotaNearlyExhaustedRatio: { '1m': 0.9, '1h': 0.9 },
    quotaNearlyExhaustedSeverity: 'warning',
    quotaNearlyExhaustedFor: '5m',

    // 429 answers within every window of this length.
    apiThrottledWindow: '5m',
    apiThrottledSeverity: 'critical',
    apiThrottledFor: '10m',

    // The API announced the end of an endpoint (Deprecation/Sunset header, or 404/410 on a
    // collection endpoint) within this window. Fires at once: one notice is worth a look. (#20)
    endpointDeprecatedWindow: '1h',
    endpointDeprecatedSeverity: 'warning',
    endpointDeprecatedFor: '',

    // Finished results waiting for quota without the backlog emptying.
    resultsWaitingForQuotaSeverity: 'warning',
    resultsWaitingForQuotaFor: '30m',

    // Every poll of a tenant failing.
    pollFailingSeverity: 'warning',
    pollFailingFor: '10m',

    // Age of the last successful poll; raise it if poll_interval is longer.
    pollStaleThreshold: '15m',
    pollStaleSeverity: 'warning',
    pollStaleFor: '5m',

    // OAuth2 token requests failing.
    authFailingSeverity: 'critical',
    authFailingFor: '5m',

    // The last config reload failed.
    configReloadFailedSeverity: 'warning',
    configReloadFailedFor: '5m',
    // MdeExporterTenantFileFailing (#34): a tenant file cannot be used (its last good tenants
    // are still polled); MdeExporterTenantsRefused: tenants whose sign-in cannot be resolved.
    tenantFileFailingSeverity: 'warning',
    tenantFileFailingFor: '10m',
    tenantsRefusedSeverity: 'warning',
    tenantsRefusedFor: '10m',
    // MdeExporterStateWriteFailing (#24): writes to the state file keep failing.
    stateWriteFailingSeverity: 'warning',
    stateWriteFailingFor: '10m',

    // MdeLiveResponseScriptMetricsStale (#21): the newest script_metrics set of a rule is older
    // than this. Keep it below the rule's ttl (7 days by default), after which the sets expire.
    scriptMetricsStaleThreshold: '2d',
    scriptMetricsStaleSeverity: 'warning',
    scriptMetricsStaleFor: '1h',
    // MdeLiveResponseScriptMetricsDropped (#32 item 5): samples of a script_metrics rule were
    // left out within this window (a bound, or output that cannot be served).
    scriptMetricsDroppedWindow: '1h',
    scriptMetricsDroppedSeverity: 'warning',
    scriptMetricsDroppedFor: '',
    // MdeLiveResponseScriptMetricsParseAbandoned (#32 item 1): readings of a script's output
    // abandoned at script_metrics_parse_timeout within this window.
    scriptMetricsParseAbandonedWindow: '1h',
    scriptMetricsParseAbandonedSeverity: 'warning',
    scriptMetricsParseAbandonedFor: '',

    // MdeExporterClockSkew (#24): |local clock - API clock| above this many seconds. Keep it
    // at the exporter's max_clock_skew (default 5m), beyond which it refuses time-based decisions.
    clockSkewThresholdSeconds: 300,
    clockSkewSeverity: 'warning',
    clockSkewFor: '5m',

    // Two exporter processes claim the same --shard.index of the same --shard.count (#24).
    shardDuplicatedSeverity: 'warning',
    shardDuplicatedFor: '10m',
    tenantServedTwiceSeverity: 'warning',
    tenantServedTwiceFor: '10m',

    // Result links to a host outside trusted_result_hosts, within the window (#32 item 14).
    resultLinksUntrustedSeverity: 'warning',
    resultLinksUntrustedFor: '',
    resultLinksUntrustedWindow: '15m',

    // Cluster mode (#31): a member that cannot reach the database; configured tenants owned
    // by nobody for longer than two lease durations (default 30s each); a member lost (its
    // tenants taken over from expired leases) within the window.
    clusterStoreDownSeverity: 'critical',
    clusterStoreDownFor: '2m',
    clusterTenantsUnownedSeverity: 'critical',
    clusterTenantsUnownedFor: '1m',
    clusterMemberLostSeverity: 'warning',
    clusterMemberLostFor: '',
    clusterMemberLostWindow: '10m',

    // Static shards (#31): an index served by nobody; processes that disagree on the count.
    shardsMissingSeverity: 'critical',
    shardsMissingFor: '5m',
    shardingMismatchSeverity: 'warning',
    shardingMismatchFor: '10m',

    // Prometheus cannot scrape the exporter (up{jobSelector} == 0).
    exporterDownSeverity: 'critical',
    exporterDownFor: '5m',

    // A script's latest attempt on some machine never ran (command failed before running,
    // action timed out, cancelled, or failed on an earlier command). (#9)
    scriptNotRunSeverity: 'warning',
    scriptNotRunFor: '15m',

    // A Live Response action has been in flight (Pending/InProgress) longer than this: a stuck
    // queue or an offline device. Actions of an offline device wait up to 2 hours before TimeOut
    // (the run-live-response page of 2025-12-31; older pages said 3 days), so 1 hour warns
    // while there is still time to act (before #20: 4h). (#9, #20)
    actionStuckThreshold: '1h',
    actionStuckSeverity: 'warning',
    actionStuckFor: '15m',

    // In-flight Live Response actions of a tenant at or above this share of the concurrent
    // session limit (recorded constants, mde:liveresponse_session_limit:count). (#9)
    // `sessionLimit` holds for every tenant not listed in `sessionLimitByTenant`: 50, the
    // run-live-response page of 2025-12-31 (older pages said 25). A tenant whose limit differs
    // gets its own entry, e.g. { contoso: 25 }. (#20)
    sessionLimit: 50,
    sessionLimitByTenant: {},
    sessionCapacityLowRatio: 0.8,
    sessionCapacityLowSeverity: 'warning',
    sessionCapacityLowFor: '10m',

    // --- per-script objectives (#22) -----------------------------------------------------------

    // Share of a script's attempts that must be good over scriptSLOPeriod: retrieved with exit
    // code 0. Bad runs are transcripts with a non-zero exit code
    // (mde_liveresponse_script_failures_total) and attempts that never ran
    // (mde_liveresponse_script_not_run_total); attempts are both kinds of run
    // (mde_liveresponse_script_runs_total + mde_liveresponse_script_not_run_total). `default`
    // holds for every script not listed in `scripts`. The compliance-check.ps1 entry is an
    // example of an override: it only applies to a script of that name. Rendered as recorded
    // constants (mde:liveresponse_script_slo_objective:ratio, with a `script` label for the
    // overrides), so a Prometheus can also add its own.
    scriptSLOs: {
      default: 0.95,
      scripts: { 'compliance-check.ps1': 0.99 },
    },
    // The period the objective is measured over; the burn-rate factors below are the SRE
    // workbook's for 30 days (14.4x for 1 hour spends 2% of a 30-day budget).
    scriptSLOPeriod: '30d',
    // MdeLiveResponseScriptErrorBudgetBurn: the multiwindow, multi-burn-rate alerts of the SRE
    // workbook. Each fires when the bad-run ratio over both its `long` and its `short` window
    // is above `factor` times the error budget (1 - objective). One recording rule per window.
    scriptErrorBudgetBurn: [
      { severity: 'critical', long: '1h', short: '5m', factor: 14.4, 'for': '2m' },
      { severity: 'critical', long: '6h', short: '30m', factor: 6, 'for': '15m' },
      { severity: 'warning', long: '1d', short: '2h', factor: 3, 'for': '1h' },
      { severity: 'warning', long: '3d', short: '6h', factor: 1, 'for': '3h' },
    ],

    // --- dashboards ----------------------------------------------------------------------------

    // Tags of every dashboard. Keep 'mde-liveresponse-exporter': the dashboards link to each
    // other through it.
    dashboardTags: ['mde', 'mde-liveresponse-exporter'],
    dashboardRefresh: '1m',
    dashboardTimeFrom: 'now-6h',
    dashboardTimezone: 'browser',
    // The "Script results" dashboard's `family` variable: the names of script_metrics families
    // (the rules' prefix, mde_script_ by default; the exporter's own mde_script_metrics_* are
    // left out). (#21)
    scriptMetricsFamilyRegex: 'mde_script_.+',
  },
}
