// The alerts. Each one has a `### Name` section in docs/runbook.md (its
// runbook_url points there) and promtool test cases in rules/tests/ where it fires and where it
// must not; scripts/check_rules.py fails without them. Severities, `for:` durations and
// thresholds come from _config (config.libsonnet).
local util = import 'lib/util.libsonnet';

{
  // An alert rule: `severity` and `for` are the names of its _config knobs' values; the
  // runbook_url is derived from the name.
  local alert(name, severity, forDuration, expr, summary, description, annotations={}) =
    { alert: name, expr: expr }
    + util.forClause(forDuration)
    + {
      labels: { severity: severity },
      annotations: {
        summary: summary,
        description: description,
        runbook_url: $._config.runbookURLPattern % std.asciiLower(name),
      } + annotations,
    },
  // The `transcript_url` annotation of an alert by (tenant, script, rbac_group) on per-machine
  // series: a link to the exporter's transcript page of one of the alert's machines, the first
  // by name. `series` is the per-machine condition with `%s` where the tenant and script
  // matchers go, e.g. 'mde_liveresponse_script_exit_code{%s} != 0'. The alert counts machines
  // and has no `machine` label, so the template asks Prometheus for them (`query`), in the
  // alert's device group the way the tenant_script_rbac_group:* rules put them there: with
  // that rbac_group in mde_machine_info, or, for an empty rbac_group, without a device group
  // (no context read yet, or an empty one). Label values are URL-escaped (`urlquery`). When the
  // machines are gone by the time the annotation renders, it links to the exporter's status
  // page. (#22)
  local transcriptURL(series) =
    local base = std.rstripChars($._config.exporterExternalURL, '/');
    local cond(sel) = '(' + std.strReplace(series, '%s', sel) + ')';
    {
      transcript_url: std.join('', [
        '{{- $sel := printf `tenant=%q,script=%q` $labels.tenant $labels.script -}}',
        '{{- $q := printf `' + cond('%s') + ' unless on (tenant, machine) mde_machine_info{rbac_group!=""}` $sel -}}',
        '{{- if $labels.rbac_group -}}',
        '{{- $q = printf `' + cond('%s') + ' and on (tenant, machine) mde_machine_info{rbac_group=%q}` $sel $labels.rbac_group -}}',
        '{{- end -}}',
        '{{- with query $q | sortByLabel "machine" -}}{{- with first . -}}',
        base + '/transcripts?tenant={{ $labels.tenant | urlquery }}&machine={{ label "machine" . | urlquery }}&script={{ $labels.script | urlquery }}',
        '{{- end -}}{{- else -}}',
        base + '/',
        '{{- end -}}',
      ]),
    },
  // Descriptions are written as lines here and rendered as one paragraph.
  local text(lines) = std.join(' ', lines),
  local c = $._config,
  // Why the script fails (#36): the alert's script's top failure signatures in the tenant, most
  // machines first (from mde_liveresponse_script_failure_signatures; `max by` folds the
  // copies of an HA pair; `other` is left out), `n` of them. Empty before the first signature.
  local signatureQuery(n) =
    'sort_desc(topk(' + n + ', max by (signature, template) (mde_liveresponse_script_failure_signatures{tenant=%q,script=%q,signature!="other"})))',
  local withSignatures(n, body) =
    '{{ with printf `' + signatureQuery(n) + '` $labels.tenant $labels.script | query }}' + body + '{{ end }}',
  // A template a redaction policy withholds is empty: the id stands for it.
  local signatureText = '{{ with .Labels.template }}{{ . }}{{ else }}signature {{ .Labels.signature }}{{ end }} ({{ .Value }} machine(s))',
  local topSignatures = withSignatures(
    c.alertTopSignatures,
    ' Why, by failure signature across the tenant (most machines first):{{ range $i, $s := . }}{{ if $i }};{{ end }} {{ with $s }}' + signatureText + '{{ end }}{{ end }}.'
  ),
  // The top signature alone, and the exporter's page of its machines.
  local signatureAnnotations = {
    top_signature: withSignatures(1, '{{ with first . }}' + signatureText + '{{ end }}'),
    signature_url: withSignatures(
      1,
      '{{ with first . }}' + std.rstripChars(c.exporterExternalURL, '/')
      + '/signatures?tenant={{ $labels.tenant | urlquery }}&script={{ $labels.script | urlquery }}&signature={{ label "signature" . | urlquery }}{{ end }}'
    ),
  },

  prometheusAlerts+:: {
    groups+: [{
      name: 'mde-liveresponse.alerts',
      rules: [
        alert(
          'MdeLiveResponseScriptFailed', c.scriptFailedSeverity, c.scriptFailedFor,
          'tenant_script_rbac_group:mde_liveresponse_machines_failing:count > 0',
          'Live Response script {{ $labels.script }} failed on {{ $value }} machine(s) in tenant {{ $labels.tenant }}',
          text([
            'The last run of {{ $labels.script }} exited with a non-zero code on {{ $value }}',
            'machine(s) of tenant {{ $labels.tenant }} in device group "{{ $labels.rbac_group }}"',
            '(empty while the machine context is not read yet). The alert clears when the script succeeds',
            'on those machines again, or when their series expire (series_ttl). See the',
            '"machines whose last run failed" table of the MDE Live Response overview dashboard.',
          ]) + topSignatures,
          transcriptURL('mde_liveresponse_script_exit_code{%s} != 0') + signatureAnnotations,
        ),

        alert(
          'MdeLiveResponseScriptErrors', c.scriptErrorsSeverity, c.scriptErrorsFor,
          'tenant_script_rbac_group:mde_liveresponse_machines_with_errors:count > 0',
          'Live Response script {{ $labels.script }} wrote errors on {{ $value }} machine(s) in tenant {{ $labels.tenant }}',
          text([
            'The last run of {{ $labels.script }} wrote to its error stream (script_errors) on',
            '{{ $value }} machine(s) of tenant {{ $labels.tenant }} in device group',
            '"{{ $labels.rbac_group }}", whatever its exit code.',
          ]) + topSignatures,
          transcriptURL('mde_liveresponse_script_errors_present{%s} == 1') + signatureAnnotations,
        ),

        alert(
          'MdeLiveResponseScriptNotRun', c.scriptNotRunSeverity, c.scriptNotRunFor,
          'tenant_script_rbac_group:mde_liveresponse_machines_not_run:count > 0',
          'Live Response script {{ $labels.script }} did not run on {{ $value }} machine(s) in tenant {{ $labels.tenant }}',
          text([
            'The latest attempt to run {{ $labels.script }} never ran on {{ $value }} machine(s) of',
            'tenant {{ $labels.tenant }}: the command failed before running (for example the script',
            'is not in the library), the action timed out or was cancelled, or an earlier command of',
            'the action failed. No transcript exists. mde_liveresponse_script_not_run_total has the',
            'reason; the exporter logs the command errors (event script_not_run). The alert clears',
            'when a later attempt runs, or when the series expire (series_ttl).',
          ]),
          transcriptURL('mde_liveresponse_script_not_run_current{%s} == 1'),
        ),

      ] + [
        // The SRE workbook's multiwindow, multi-burn-rate alerts, one rule per window pair
        // (labels long and short). The value is the burn rate over the long window: how many
        // times faster than the objective allows the error budget is being spent. (#22)
        local ratio(w) = 'tenant_script:mde_liveresponse_script_bad_runs:ratio_rate' + w;
        local budget = '(1 - tenant_script:mde_liveresponse_script_slo_objective:ratio)';
        local period = util.seconds(c.scriptSLOPeriod);
        local lasts(factor) =
          local hours = period / 3600 / factor;
          if hours % 24 == 0 then '%g days' % (hours / 24) else '%g hours' % std.round(hours);
        alert(
          'MdeLiveResponseScriptErrorBudgetBurn', b.severity, b['for'],
          |||
            %(long)s / on (tenant, script) %(budget)s > %(factor)g
            and
            %(short)s / on (tenant, script) %(budget)s > %(factor)g
          ||| % { long: ratio(b.long), short: ratio(b.short), budget: budget, factor: b.factor },
          'Live Response script {{ $labels.script }} is burning its error budget in tenant {{ $labels.tenant }}',
          text([
            'Runs of {{ $labels.script }} in tenant {{ $labels.tenant }} that failed (non-zero exit',
            'code) or never ran are spending the error budget of its objective',
            '({{ with printf `tenant_script:mde_liveresponse_script_slo_objective:ratio{tenant=%q,script=%q}`',
            '$labels.tenant $labels.script | query }}{{ . | first | value | humanizePercentage }}{{ end }}',
            'good runs over ' + util.humanize(c.scriptSLOPeriod) + ') at {{ $value | printf "%.1f" }}x the',
            'rate the objective allows over the last ' + util.humanize(b.long) + ', and at more than',
            std.toString(b.factor) + 'x over the last ' + util.humanize(b.short) + '. At',
            std.toString(b.factor) + 'x the whole budget is gone in ' + lasts(b.factor) + '. The',
            'error budget panels of the MDE Live Response overview dashboard show it by script; the',
            'MdeLiveResponseScriptFailed and MdeLiveResponseScriptNotRun alerts name the machines.',
          ]),
        ) + { labels+: { long: b.long, short: b.short } }
        for b in c.scriptErrorBudgetBurn
      ] + [
        alert(
          'MdeLiveResponseActionStuck', c.actionStuckSeverity, c.actionStuckFor,
          'time() - mde_liveresponse_in_flight_oldest_creation_timestamp_seconds > %d'
          % util.seconds(c.actionStuckThreshold),
          'A Live Response action of tenant {{ $labels.tenant }} has been in flight for {{ $value | humanizeDuration }}',
          text([
            'The oldest Live Response action of tenant {{ $labels.tenant }} that is still Pending or',
            'InProgress was created {{ $value | humanizeDuration }} ago (threshold',
            util.humanize(c.actionStuckThreshold) + '): a device is offline, or the queue is stuck.',
            'Actions of an offline device wait up to 2 hours (older documentation: 3 days) before they time out.',
          ]),
        ),

        alert(
          'MdeLiveResponseSessionCapacityLow', c.sessionCapacityLowSeverity, c.sessionCapacityLowFor,
          |||
            sum by (tenant) (mde_liveresponse_actions_in_flight)
              >= on (tenant)
            (tenant:mde_liveresponse_session_limit:count * %g)
          ||| % c.sessionCapacityLowRatio,
          'Tenant {{ $labels.tenant }} has {{ $value }} Live Response actions in flight, near the concurrent session limit',
          text([
            '{{ $value }} Live Response actions of tenant {{ $labels.tenant }} are Pending or',
            'InProgress, at least ' + std.toString(c.sessionCapacityLowRatio * 100) + '% of the',
            '{{ with printf `tenant:mde_liveresponse_session_limit:count{tenant=%q}` $labels.tenant | query }}{{ . | first | value }}{{ end }}',
            'concurrent sessions the tenant may have (default ' + std.toString(c.sessionLimit) + '): new Live',
            'Response sessions will soon be refused.',
          ]),
        ),

        alert(
          'MdeLiveResponseResultFetchFailing', c.resultFetchFailingSeverity, c.resultFetchFailingFor,
          'sum by (tenant, reason) (increase(mde_liveresponse_result_fetch_failures_total[%s])) > 0'
          % c.resultFetchFailingWindow,
          'Live Response results of tenant {{ $labels.tenant }} are being given up ({{ $labels.reason }})',
          text([
            '{{ $value | printf "%.0f" }} command result(s) of tenant {{ $labels.tenant }} could not be',
            'retrieved or read in the last ' + util.humanize(c.resultFetchFailingWindow),
            '(reason {{ $labels.reason }}); the exporter does not retry them, so their exit codes',
            'are missing from the other metrics.',
          ]),
        ),

        alert(
          'MdeApiQuotaNearlyExhausted', c.quotaNearlyExhaustedSeverity, c.quotaNearlyExhaustedFor,
          |||
            tenant_endpoint_window:mde_api_quota_exhausted:ratio
              >= on (window) group_left ()
            mde:api_quota_nearly_exhausted_threshold:ratio
          |||,
          'MDE API quota of {{ $labels.endpoint }} ({{ $labels.window }} window) nearly exhausted in tenant {{ $labels.tenant }}',
          text([
            '{{ $value | humanizePercentage }} of the {{ $labels.window }} budget of the',
            '{{ $labels.endpoint }} endpoint in tenant {{ $labels.tenant }} has been spent (by the',
            'exporter, or withheld after 429s because another client spends it) for',
            util.humanize(c.quotaNearlyExhaustedFor) + '. Results will queue',
            '(mde_liveresponse_pending_results) and other tools sharing the app registration may',
            'be throttled.',
          ]),
        ),

        alert(
          'MdeApiThrottled', c.apiThrottledSeverity, c.apiThrottledFor,
          'sum by (tenant, endpoint) (increase(mde_api_throttled_total[%s])) > 0' % c.apiThrottledWindow,
          'MDE API is throttling tenant {{ $labels.tenant }} on {{ $labels.endpoint }}',
          text([
            'The MDE API answered 429 Too Many Requests {{ $value | printf "%.0f" }} time(s) in the',
            'last ' + util.humanize(c.apiThrottledWindow) + ' on {{ $labels.endpoint }} for tenant',
            '{{ $labels.tenant }}, and has kept doing so for ' + util.humanize(c.apiThrottledFor) + ':',
            'the quota is exhausted, most likely by another client of the same app registration.',
          ]),
        ),

        alert(
          'MdeApiEndpointDeprecated', c.endpointDeprecatedSeverity, c.endpointDeprecatedFor,
          // increase() misses a counter's first sample: the `unless ... offset` term catches a
          // series that is new within the window.
          |||
            sum by (tenant, endpoint, reason) (increase(mde_api_endpoint_deprecation_notices_total[%(w)s])) > 0
            or
            sum by (tenant, endpoint, reason) (
              mde_api_endpoint_deprecation_notices_total
                unless mde_api_endpoint_deprecation_notices_total offset %(w)s
            )
          ||| % { w: c.endpointDeprecatedWindow },
          'The MDE API announces the end of {{ $labels.endpoint }} (tenant {{ $labels.tenant }})',
          text([
            'Within the last ' + util.humanize(c.endpointDeprecatedWindow) + ' the MDE API answered',
            '{{ $labels.endpoint }} for tenant {{ $labels.tenant }} with a deprecation notice',
            '({{ $labels.reason }}: a Deprecation or Sunset header, or gone: 404/410 on a collection).',
            'The exporter will stop seeing Live Response results when the endpoint is retired; the',
            'status page shows what the answer said.',
          ]),
        ),

        alert(
          'MdeLiveResponseResultsWaitingForQuota', c.resultsWaitingForQuotaSeverity, c.resultsWaitingForQuotaFor,
          'mde_liveresponse_pending_results > 0',
          'Live Response results of tenant {{ $labels.tenant }} have been waiting for API quota for '
          + util.humanize(c.resultsWaitingForQuotaFor),
          text([
            '{{ $value | printf "%.0f" }} finished command result(s) of tenant {{ $labels.tenant }}',
            'are waiting to be retrieved and the backlog has not emptied for',
            util.humanize(c.resultsWaitingForQuotaFor) + ': the API quota does not keep up with the',
            'number of Live Response results.',
          ]),
        ),

        alert(
          'MdeExporterPollFailing', c.pollFailingSeverity, c.pollFailingFor,
          'mde_exporter_poll_success == 0',
          'Polls of tenant {{ $labels.tenant }} are failing',
          text([
            "The exporter's polls of the MDE API for tenant {{ $labels.tenant }} have failed for",
            util.humanize(c.pollFailingFor) + '; Live Response metrics of this tenant are not being',
            'updated.',
          ]),
        ),

        alert(
          'MdeExporterPollStale', c.pollStaleSeverity, c.pollStaleFor,
          'time() - mde_exporter_last_poll_success_timestamp_seconds > %d' % util.seconds(c.pollStaleThreshold),
          'No successful poll of tenant {{ $labels.tenant }} for {{ $value | humanizeDuration }}',
          text([
            'The last successful poll of tenant {{ $labels.tenant }} was {{ $value | humanizeDuration }}',
            'ago (threshold ' + util.humanize(c.pollStaleThreshold) + '): polls fail, hang or wait for quota.',
          ]),
        ),

        alert(
          'MdeExporterAuthFailing', c.authFailingSeverity, c.authFailingFor,
          'mde_exporter_token_success == 0',
          'The exporter cannot get an access token for tenant {{ $labels.tenant }}',
          text([
            'OAuth2 client-credentials token requests for tenant {{ $labels.tenant }} have failed',
            'for ' + util.humanize(c.authFailingFor) + ' (wrong or expired client secret, wrong',
            'tenant/client id, missing admin consent, or login endpoint unreachable). Nothing of',
            'this tenant is being polled.',
          ]),
        ),

        alert(
          'MdeExporterConfigReloadFailed', c.configReloadFailedSeverity, c.configReloadFailedFor,
          'mde_exporter_config_last_reload_successful == 0',
          'mde-liveresponse-exporter {{ $labels.instance }} failed to reload its configuration',
          text([
            'The last configuration reload of {{ $labels.instance }} failed; the exporter keeps',
            'running with the previous configuration.',
          ]),
        ),

        // See: #34. A tenant file that does not parse or validate, or brings a tenant name
        // served from elsewhere, keeps its last good tenants: nothing changed in it since is
        // applied (a customer onboarded in it is not watched).
        alert(
          'MdeExporterTenantFileFailing', c.tenantFileFailingSeverity, c.tenantFileFailingFor,
          'mde_exporter_tenant_file_last_load_successful == 0',
          'Tenant file {{ $labels.file }} of {{ $labels.instance }} cannot be used',
          text([
            'The latest read of the tenant file {{ $labels.file }} on {{ $labels.instance }} has failed',
            'for ' + util.humanize(c.tenantFileFailingFor) + ' (it does not parse or validate, or it brings a',
            'tenant name served from elsewhere). Its last good tenants are still polled; what changed',
            'in it since is not applied. The status page and the log line "tenant file not used"',
            'name the line and the key.',
          ]),
        ),

        alert(
          'MdeExporterTenantsRefused', c.tenantsRefusedSeverity, c.tenantsRefusedFor,
          'mde_exporter_tenants_refused > 0',
          '{{ $value }} tenant(s) of {{ $labels.instance }} refused: their sign-in cannot be resolved',
          text([
            '{{ $value }} tenant entries on {{ $labels.instance }} have been refused for',
            util.humanize(c.tenantsRefusedFor) + ': their sign-in cannot be resolved (an environment',
            'variable not set, a certificate or secret file missing or not acceptable). They are not',
            'polled; the other tenants are. The status page lists them with the reason.',
          ]),
        ),

        alert(
          'MdeExporterStateWriteFailing', c.stateWriteFailingSeverity, c.stateWriteFailingFor,
          'increase(mde_exporter_state_write_errors_total[5m]) > 0',
          'mde-liveresponse-exporter {{ $labels.instance }} cannot write its state file',
          text([
            'Writes to the state file of {{ $labels.instance }} have kept failing (full disk, I/O',
            'error, read-only volume) for ' + util.humanize(c.stateWriteFailingFor) + '. What is',
            'retrieved is still exposed, but what it has counted is not remembered: after a',
            'restart results may be fetched and counted again.',
          ]),
        ),

        // See: #24 item 7. The local clock disagrees with the MDE API's (its Date header) by
        // more than the exporter's max_clock_skew: nothing in flight is abandoned and no
        // per-machine series expires by time until they agree again.
        alert(
          'MdeExporterClockSkew', c.clockSkewSeverity, c.clockSkewFor,
          'abs(mde_exporter_clock_skew_seconds) > %d' % c.clockSkewThresholdSeconds,
          'The clock of mde-liveresponse-exporter {{ $labels.instance }} is {{ $value | humanizeDuration }} off the MDE API (tenant {{ $labels.tenant }})',
          text([
            'The local clock of {{ $labels.instance }} minus the MDE API\'s (the Date header of its',
            'answers) has been beyond ' + c.clockSkewThresholdSeconds + ' s for ' + util.humanize(c.clockSkewFor),
            '(mde_exporter_clock_skew_seconds, negative: behind). Beyond max_clock_skew the exporter',
            'abandons no in-flight action and expires no per-machine series by time: series of',
            'machines that stopped running the script stay, until the clocks agree again.',
          ]),
        ),

        alert(
          'MdeExporterShardDuplicated', c.shardDuplicatedSeverity, c.shardDuplicatedFor,
          'count by (index, count) (mde_exporter_shard_info{count!="1"}) > 1',
          'Shard {{ $labels.index }} of {{ $labels.count }} is served by {{ $value }} exporters',
          text([
            '{{ $value }} exporter processes say they are shard {{ $labels.index }} of',
            '{{ $labels.count }} (mde_exporter_shard_info): each of them serves the same tenants,',
            'spends their API quota again and exposes their series twice, so sums over tenants',
            'double. Another shard index is then served by nobody.',
          ]),
        ),

        // See: #32 item 14. Result links to a host outside trusted_result_hosts: every such
        // result is given up; a new storage host form would fail every transcript.
        alert(
          'MdeLiveResponseResultLinksUntrusted', c.resultLinksUntrustedSeverity, c.resultLinksUntrustedFor,
          'sum by (tenant) (increase(mde_liveresponse_result_fetch_failures_total{%s,reason="untrusted_link"}[%s])) > 0' % [c.jobSelector, c.resultLinksUntrustedWindow],
          'Result links of tenant {{ $labels.tenant }} point to an untrusted host',
          text([
            'The API handed out result links of tenant {{ $labels.tenant }} to a host outside',
            'trusted_result_hosts; those results were given up unread',
            '(mde_liveresponse_result_fetch_failures_total{reason="untrusted_link"}).',
          ]),
        ),

        // See: #31. A cluster member cannot reach the cluster's database: it stops polling
        // its tenants when their leases run out, and nobody else can take them meanwhile.
        alert(
          'MdeExporterClusterStoreDown', c.clusterStoreDownSeverity, c.clusterStoreDownFor,
          'max by (member) (mde_exporter_cluster_store_up{%s}) == 0' % c.jobSelector,
          'Cluster member {{ $labels.member }} cannot reach the cluster database',
          text([
            'Member {{ $labels.member }} has not reached the cluster PostgreSQL database at its',
            'last lease rounds (mde_exporter_cluster_store_up 0): it cannot renew its leases, so',
            'it stops polling its tenants when they run out; their failing scripts page nobody',
            'until the database answers again.',
          ]),
        ),

        // See: #31. Configured tenants that no member owns (for longer than two leases).
        alert(
          'MdeExporterClusterTenantsUnowned', c.clusterTenantsUnownedSeverity, c.clusterTenantsUnownedFor,
          'max(mde_exporter_cluster_tenants_configured{%s}) - sum(mde_exporter_cluster_tenants_owned{%s}) > 0' % [c.jobSelector, c.jobSelector],
          '{{ $value }} configured tenants are owned by no cluster member',
          text([
            '{{ $value }} of the tenants the cluster members are configured with are held by no',
            'member (mde_exporter_cluster_tenants_configured minus the sum of',
            'mde_exporter_cluster_tenants_owned): nobody polls them.',
          ]),
        ),

        // See: #31. A member died (or froze, or lost its network): its tenants were taken over
        // from its expired leases rather than handed over.
        alert(
          'MdeExporterClusterMemberLost', c.clusterMemberLostSeverity, c.clusterMemberLostFor,
          'sum(increase(mde_exporter_cluster_lease_transitions_total{%s,reason="taken_over"}[%s])) > 0' % [c.jobSelector, c.clusterMemberLostWindow],
          'A cluster member was lost: its tenants were taken over',
          text([
            'Tenant leases were taken over from a member whose leases expired',
            'without being released (mde_exporter_cluster_lease_transitions_total',
            '{reason="taken_over"}): a member was killed, froze or lost the network. Its tenants',
            'are polled again by the others; a result it was fetching is asked for again.',
          ]),
        ),

        // See: #31. Static shards: an index nobody serves (kube-state-metrics'
        // KubeStateMetricsShardsMissing: each live shard adds 2^index; all present make
        // 2^count - 1), and processes that disagree on the count (its ShardingMismatch).
        alert(
          'MdeExporterShardsMissing', c.shardsMissingSeverity, c.shardsMissingFor,
          '2 ^ max(mde_exporter_total_shards{%(j)s}) - 1 - sum(2 ^ max by (index) (mde_exporter_shard_ordinal{%(j)s} * on (instance, job) group_left (index) mde_exporter_shard_info{%(j)s})) != 0 and on () max(mde_exporter_total_shards{%(j)s}) > 1' % { j: c.jobSelector },
          'Static shards are missing: not every --shard.index of --shard.count is served',
          text([
            'Fewer than --shard.count distinct shard indexes are up (mde_exporter_shard_ordinal',
            'against mde_exporter_total_shards): the tenants of a missing shard are polled by',
            'nobody. A deleted or stuck StatefulSet pod is not replaced until a person acts.',
          ]),
        ),
        alert(
          'MdeExporterShardingMismatch', c.shardingMismatchSeverity, c.shardingMismatchFor,
          'count(count by (count) (mde_exporter_shard_info{%s})) > 1' % c.jobSelector,
          'Exporter shards disagree on --shard.count',
          text([
            'The exporter processes report more than one --shard.count',
            '(mde_exporter_shard_info{count}): they split the tenants differently, so some',
            'tenants are served twice and others by nobody.',
          ]),
        ),

        // See: #24 item 8. One tenant name polled by two processes: two deployments, two
        // shard sets, or replicas of an unsharded exporter that each serve every tenant.
        alert(
          'MdeExporterTenantServedTwice', c.tenantServedTwiceSeverity, c.tenantServedTwiceFor,
          'count by (tenant) (mde_exporter_poll_success{%s}) > 1' % c.jobSelector,
          'Tenant {{ $labels.tenant }} is served by {{ $value }} exporters',
          text([
            '{{ $value }} exporter processes poll tenant {{ $labels.tenant }}',
            '(mde_exporter_poll_success): its API quota is spent once per process (more 429s)',
            'and its series are exposed once per process, so sums over its scripts double.',
          ]),
        ),

        alert(
          'MdeExporterDown', c.exporterDownSeverity, c.exporterDownFor,
          'up{%s} == 0' % c.jobSelector,
          'mde-liveresponse-exporter {{ $labels.instance }} is down',
          text([
            'Prometheus has not been able to scrape {{ $labels.instance }} (job',
            '{{ $labels.job }}) for ' + util.humanize(c.exporterDownFor) + ': no Live Response or',
            'quota metrics, and no alerts based on them, come from it.',
          ]),
        ),

        // See: #21. Even the newest set of a script_metrics rule is old: the script no longer
        // runs anywhere, or its transcripts are no longer retrieved.
        alert(
          'MdeLiveResponseScriptMetricsStale', c.scriptMetricsStaleSeverity, c.scriptMetricsStaleFor,
          'time() - max by (tenant, script) (mde_script_metrics_last_transcript_timestamp_seconds) > %d'
          % util.seconds(c.scriptMetricsStaleThreshold),
          'The script_metrics of {{ $labels.script }} in tenant {{ $labels.tenant }} are {{ $value | humanizeDuration }} old',
          text([
            'The newest transcript that gave mde_script_* series for {{ $labels.script }} in tenant',
            '{{ $labels.tenant }} is {{ $value | humanizeDuration }} old (threshold',
            util.humanize(c.scriptMetricsStaleThreshold) + '): on every machine its values are as old as that.',
            'The script is no longer run, or its results are not retrieved. The sets expire after',
            "the rule's ttl (7 days by default).",
          ]),
        ),

        // See: #32 item 5. A rule's bounds left samples out: a machine prints more than its
        // share (series or bytes), or prints what the exposition must not hold.
        alert(
          'MdeLiveResponseScriptMetricsDropped', c.scriptMetricsDroppedSeverity, c.scriptMetricsDroppedFor,
          // increase() misses a counter's first sample: the `unless ... offset` term catches a
          // series that is new within the window.
          |||
            sum by (tenant, script, reason) (increase(mde_script_metrics_dropped_total[%(w)s])) > 0
            or
            sum by (tenant, script, reason) (
              mde_script_metrics_dropped_total
                unless mde_script_metrics_dropped_total offset %(w)s
            )
          ||| % { w: c.scriptMetricsDroppedWindow },
          'Samples of {{ $labels.script }} in tenant {{ $labels.tenant }} are left out ({{ $labels.reason }})',
          text([
            '{{ $value | printf "%.0f" }} sample(s) that {{ $labels.script }} printed in tenant',
            '{{ $labels.tenant }} were left out in the last ' + util.humanize(c.scriptMetricsDroppedWindow),
            '(reason {{ $labels.reason }}): the mde_script_* series of some machines are missing or',
            'incomplete. max_series, max_bytes: one transcript printed more than its bound;',
            'max_total, max_total_bytes, fair_share: the machines of the rule together printed more',
            'than its totals, and each keeps an equal share; the others: what the script printed',
            'cannot be served as it is.',
          ]),
        ),
        // See: #32 item 1. Reading a transcript's output took longer than
        // script_metrics_parse_timeout: the reading was abandoned, the transcript gave no set.
        alert(
          'MdeLiveResponseScriptMetricsParseAbandoned', c.scriptMetricsParseAbandonedSeverity, c.scriptMetricsParseAbandonedFor,
          // The counter is at 0 from a rule's first set on; a rule whose first reading was
          // abandoned starts at 1: the `unless ... offset` term catches that series.
          |||
            sum by (tenant, script) (increase(mde_script_metrics_parse_abandoned_total[%(w)s])) > 0
            or
            sum by (tenant, script) (
              mde_script_metrics_parse_abandoned_total > 0
                unless mde_script_metrics_parse_abandoned_total offset %(w)s
            )
          ||| % { w: c.scriptMetricsParseAbandonedWindow },
          'Reading the output of {{ $labels.script }} in tenant {{ $labels.tenant }} was abandoned',
          text([
            '{{ $value | printf "%.0f" }} transcript(s) of {{ $labels.script }} in tenant',
            '{{ $labels.tenant }} took longer to read than script_metrics_parse_timeout in the last',
            util.humanize(c.scriptMetricsParseAbandonedWindow) + ': their mde_script_* series were',
            'not updated (the machines keep their previous values). A script printing far more',
            'than it should, or output made to be slow to read.',
          ]),
        ),
      ],
    }],
  },
}
