// The four Grafana dashboards: overview (script results), API quota, exporter health, script
// results (script output as metrics, #21). Every query filters on the `job` variable, and every mde_* series with a tenant on `tenant`. Range
// queries over the series that carry trace-id exemplars (script counters, fetch failures, API
// requests, the buckets of the API latency and poll duration histograms) ask for exemplars, so
// Grafana links a point to its trace.
local p = import 'lib/panels.libsonnet';
local util = import 'lib/util.libsonnet';

local target = p.target;
local J = 'job=~"$job"';
local T = J + ',tenant=~"$tenant"';
local TS = T + ',script=~"$script"';

// Per-machine series of the selected device groups (`rbac_group` variable, from
// mde_machine_info); machines whose context is not read yet are always shown.
local inGroup(series) =
  '(%s and on (tenant, machine) mde_machine_info{%s,rbac_group=~"$rbac_group"} or %s unless on (tenant, machine) mde_machine_info{%s})'
  % [series, T, series, T];

local overview(config) =
  local runs = 'mde_liveresponse_script_runs_total{%s}' % TS;
  local fails = 'mde_liveresponse_script_failures_total{%s}' % TS;
  local errs = 'mde_liveresponse_script_errors_total{%s}' % TS;
  local exitCode = inGroup('mde_liveresponse_script_exit_code{%s}' % TS);
  local notRun = 'mde_liveresponse_script_not_run_total{%s}' % TS;
  local notRunNow = inGroup('mde_liveresponse_script_not_run_current{%s}' % TS);
  local redIfAny = [[null, 'green'], [1, 'red']];
  p.dashboard(
    config,
    'mde-lr-overview',
    'MDE Live Response / Overview',
    'Live Response script results: runs, failures and errors by script, the machines whose last run failed, last exit codes.',
    withScript=true,
    extraVariables=[p.exporterUrlVariable(config)],
    panels=[
      [p.row('Script results'), 24, 1],
      [p.stat('Transcripts retrieved', "RunScript transcripts retrieved in the dashboard's time range.",
              [target('sum(increase(%s[$__range])) or vector(0)' % runs, 'runs', instant=true)], decimals=0), 4, 4],
      [p.stat('Failed runs', 'Transcripts with a non-zero exit code in the time range.',
              [target('sum(increase(%s[$__range])) or vector(0)' % fails, 'failures', instant=true)],
              steps=redIfAny, decimals=0), 4, 4],
      [p.stat('Scripts that did not run', 'RunScript commands of final actions that produced no transcript in the time range (command failed, action timed out, cancelled or failed earlier).',
              [target('sum(increase(%s[$__range])) or vector(0)' % notRun, 'not run', instant=true)],
              steps=redIfAny, decimals=0), 4, 4],
      [p.stat('Failure ratio', 'Failed transcripts / retrieved transcripts over the time range.',
              [target('sum(increase(%s[$__range])) / sum(increase(%s[$__range]))' % [fails, runs], 'ratio',
                      instant=true)],
              unit='percentunit', steps=[[null, 'green'], [0.05, 'orange'], [0.2, 'red']], decimals=1), 4, 4],
      [p.stat('Machines whose last run failed', 'Machines (and scripts) whose latest retrieved run exited non-zero.',
              [target('count(%s != 0) or vector(0)' % exitCode, 'machines', instant=true)],
              steps=redIfAny, decimals=0), 4, 4],
      [p.stat('Machines whose last attempt did not run', 'Machines (and scripts) whose latest attempt never ran.',
              [target('count(%s == 1) or vector(0)' % notRunNow, 'machines', instant=true)],
              steps=redIfAny, decimals=0), 4, 4],
      [p.timeseries('Runs by script', 'Transcripts retrieved per second, by script.',
                    [target('sum by (script) (rate(%s[$__rate_interval]))' % runs, '{{script}}', exemplar=true)],
                    unit='ops'), 8, 8],
      [p.timeseries('Failures by script', 'Transcripts with a non-zero exit code per second, by script.',
                    [target('sum by (script) (rate(%s[$__rate_interval]))' % fails, '{{script}}', exemplar=true)],
                    unit='ops'), 8, 8],
      [p.timeseries('Errors by script', 'Transcripts whose script wrote to its error stream, per second, by script.',
                    [target('sum by (script) (rate(%s[$__rate_interval]))' % errs, '{{script}}', exemplar=true)],
                    unit='ops'), 8, 8],
      [p.timeseries('Failure ratio by script', 'Failed / retrieved transcripts, by script (empty while none is retrieved).',
                    [target('sum by (script) (rate(%s[$__rate_interval])) / sum by (script) (rate(%s[$__rate_interval]))'
                            % [fails, runs], '{{script}}', exemplar=true)],
                    unit='percentunit', max=1), 12, 8],
      [p.timeseries('Live Response commands and actions',
                    'Commands by type and commandStatus, and final machine actions by status, per second.',
                    [
                      target('sum by (command, status) (rate(mde_liveresponse_commands_total{%s}[$__rate_interval]))' % T,
                             '{{command}} {{status}}', 'A'),
                      target('sum by (status) (rate(mde_liveresponse_actions_total{%s}[$__rate_interval]))' % T,
                             'action {{status}}', 'B'),
                    ], unit='ops'), 12, 8],
      [p.timeseries('Not run by script and reason', 'RunScript commands that produced no transcript, per second, by script and reason.',
                    [target('sum by (script, reason) (rate(%s[$__rate_interval]))' % notRun, '{{script}} {{reason}}', exemplar=true)],
                    unit='ops'), 12, 8],
      [p.timeseries('Actions in flight', 'Live Response actions Pending or InProgress, by status (25 concurrent sessions per tenant).',
                    [target('sum by (status) (mde_liveresponse_actions_in_flight{%s})' % T, '{{status}}')],
                    unit='short'), 12, 8],
      // Per-script objectives (#22): the budget left over the time range (set it to the SLO
      // period, 30 days by default, to read it against the objective) and the burn rate the
      // MdeLiveResponseScriptErrorBudgetBurn alerts compare with their factors.
      [p.row('Error budget'), 24, 1],
      [p.bargauge('Error budget left',
                  'Per script: 1 - (bad runs / attempts over the time range) / (1 - objective). Bad runs exited non-zero or never ran; the objective is _config.scriptSLOs (tenant_script:mde_liveresponse_script_slo_objective:ratio). Below 0 the objective is missed over the range; set the range to ' + config.scriptSLOPeriod + ' to read it over the period of the objective.',
                  [target(|||
                    1 - (
                      sum by (script) (increase(%(fails)s[$__range]) or increase(%(notRun)s[$__range]) or increase(%(runs)s[$__range]) * 0)
                        / (sum by (script) (increase(%(runs)s[$__range]) or increase(%(notRun)s[$__range])) > 0)
                    ) / on (script) (1 - max by (script) (tenant_script:mde_liveresponse_script_slo_objective:ratio{tenant=~"$tenant",script=~"$script"}))
                  ||| % { fails: fails, notRun: notRun, runs: runs }, '{{script}}', instant=true)],
                  steps=[[null, 'red'], [0.25, 'orange'], [0.5, 'green']]), 12, 8],
      [p.timeseries('Error budget burn rate (1 hour)',
                    'Per tenant and script: bad-run ratio over the last hour / error budget (1 - objective). 1 spends the budget exactly over the objective period; the first MdeLiveResponseScriptErrorBudgetBurn rule pages above ' + std.toString(config.scriptErrorBudgetBurn[0].factor) + ' (with its short window above it too).',
                    [target('tenant_script:mde_liveresponse_script_bad_runs:ratio_rate1h{tenant=~"$tenant",script=~"$script"} / on (tenant, script) (1 - tenant_script:mde_liveresponse_script_slo_objective:ratio{tenant=~"$tenant",script=~"$script"})',
                            '{{tenant}} {{script}}')],
                    steps=[[null, 'green'], [1, 'orange'], [config.scriptErrorBudgetBurn[0].factor, 'red']]), 12, 8],
      [p.row('Machines'), 24, 1],
      // Why it fails (#36): machines per failure signature, each signature linked to the
      // exporter's page of its machines. Per tenant and script (no device group: the counts are
      // over every machine of the tenant).
      [p.table('Why it fails',
               'Machines whose latest run of a script failed, by failure signature (mde_liveresponse_script_failure_signatures): the normalised first error, most machines first; "other" holds the signatures beyond the exporter\'s failure_signatures_top_k. Over every device group of the tenant. The signature links to the exporter\'s page of its machines.',
               [target('max by (tenant, script, signature, template) (mde_liveresponse_script_failure_signatures{%s})' % TS,
                       '', 'A', instant=true, format='table')],
               rename={ Value: 'machines' }, sortBy=['machines', true])
       + { fieldConfig+: { overrides+: [{
         matcher: { id: 'byName', options: 'signature' },
         properties: [{ id: 'links', value: [{
           title: 'Machines with this signature',
           url: std.rstripChars(config.exporterExternalURL, '/')
                + '/signatures?tenant=${__data.fields.tenant:percentencode}&script=${__data.fields.script:percentencode}&signature=${__value.raw:percentencode}',
           targetBlank: true,
         }] }],
       }] } }, 24, 8],
      [p.table('Machines whose last run failed',
               'Latest retrieved run per machine and script where the exit code is not 0.',
               [
                 target('%s != 0' % exitCode, '', 'A', instant=true, format='table'),
                 target('1000 * (mde_liveresponse_script_last_run_timestamp_seconds{%s} and on (tenant, machine, script) (%s != 0))'
                        % [TS, exitCode], '', 'B', instant=true, format='table'),
               ],
               rename={ 'Value #A': 'exit code', 'Value #B': 'last run' },
               unitOverrides={ 'last run': 'dateTimeAsIso' }, sortBy=['last run', true], transcripts=true), 24, 8],
      [p.table('Machines whose last attempt did not run',
               'Machines and scripts whose latest attempt produced no transcript (command failed, action timed out, cancelled or failed earlier); the machine links to the latest transcript it did produce.',
               [target('%s == 1' % notRunNow, '', 'A', instant=true, format='table')],
               exclude=['Value'], sortBy=['machine', false], transcripts=true), 24, 6],
      [p.table('Machine context', 'Device group, OS platform and health of the machines with per-machine series (mde_machine_info, read slowly with GET /api/machines).',
               [target('mde_machine_info{%s,rbac_group=~"$rbac_group"}' % T, '', 'A', instant=true, format='table')],
               exclude=['Value'], sortBy=['rbac_group', false]), 24, 8],
      [p.table('Last exit code per machine', 'Latest retrieved run of every machine and script.',
               [
                 target(exitCode, '', 'A', instant=true, format='table'),
                 target(inGroup('mde_liveresponse_script_errors_present{%s}' % TS), '', 'B', instant=true, format='table'),
                 target('1000 * %s' % inGroup('mde_liveresponse_script_last_run_timestamp_seconds{%s}' % TS), '', 'C',
                        instant=true, format='table'),
               ],
               rename={ 'Value #A': 'exit code', 'Value #B': 'errors', 'Value #C': 'last run' },
               unitOverrides={ 'last run': 'dateTimeAsIso' }, sortBy=['last run', true], transcripts=true), 24, 10],
    ],
  );

// Script output as metrics (#21): the latest value of one mde_script_* family (the `family`
// variable) per machine, with its machine context, filtered by device group and machine tag.
local scriptResults(config) =
  local TSM = T + ',script=~"$script"';
  local last = 'mde_script_metrics_last_transcript_timestamp_seconds{%s}' % TSM;
  local family = '{__name__="$family",%s}' % TSM;
  // All of `tag` ('.*') also matches the empty string: then machines without tags are shown
  // too; a chosen tag shows only the machines that have it. label_replace sets all="yes" only
  // when its regex, $tag, matches the (empty) label `none`.
  local tagAll = '(label_replace(vector(1), "all", "yes", "none", "$tag") and on (all) label_replace(vector(1), "all", "yes", "none", ".*"))';
  local tagged = '(mde_machine_tag{%s,tag=~"$tag"} or on (tenant, machine) ((mde_machine_info{%s} unless on (tenant, machine) mde_machine_tag{%s}) and on () %s))'
                 % [T, T, T, tagAll];
  // Machines whose context is not read yet are always shown (no group, no tags).
  local inContext(series) =
    '(%s * on (tenant, machine) group_left (rbac_group, os_platform, health_status) mde_machine_info{%s,rbac_group=~"$rbac_group"} and on (tenant, machine) %s) or (%s unless on (tenant, machine) mde_machine_info{%s})'
    % [series, T, tagged, series, T];
  local familyVariable = p.queryVariable(
    'family', 'Family',
    'label_values({__name__=~"%s",__name__!~"mde_script_metrics_.+",job=~"$job",tenant=~"$tenant",script=~"$script"}, __name__)'
    % config.scriptMetricsFamilyRegex,
    allValue=null
  ) + { includeAll: false, multi: false };
  p.dashboard(
    config,
    'mde-lr-script-results',
    'MDE Live Response / Script results',
    'Script output as metrics: the latest value of a script_metrics family per machine, with its device group, OS and health, filtered by device group and machine tag; the age of the sets, invalid lines and dropped samples.',
    extraVariables=[
      p.queryVariable('script', 'Script',
                      'label_values(mde_script_metrics_last_transcript_timestamp_seconds{job=~"$job",tenant=~"$tenant"}, script)'),
      familyVariable,
      p.queryVariable('rbac_group', 'Device group',
                      'label_values(mde_machine_info{job=~"$job",tenant=~"$tenant"}, rbac_group)'),
      p.queryVariable('tag', 'Machine tag', 'label_values(mde_machine_tag{job=~"$job",tenant=~"$tenant"}, tag)'),
      p.exporterUrlVariable(config),
    ],
    panels=[
      [p.row('Script results'), 24, 1],
      [p.stat('Machines reporting', 'Machines (and scripts) with a current script_metrics set.',
              [target('count(%s) or vector(0)' % last, 'machines', instant=true)], decimals=0), 6, 4],
      [p.stat('Age of the newest set', 'Time since the newest transcript that gave a set (MdeLiveResponseScriptMetricsStale fires above ' + util.humanize(config.scriptMetricsStaleThreshold) + ').',
              [target('time() - max(%s)' % last, 'age', instant=true)], unit='s',
              steps=[[null, 'green'], [util.seconds(config.scriptMetricsStaleThreshold), 'red']]), 6, 4],
      [p.stat('Invalid lines', 'Lines that started like a sample and did not parse, and JSON paths missing or not a number, in the time range.',
              [target('sum(increase(mde_script_metrics_lines_invalid_total{%s}[$__range])) or vector(0)' % TSM, 'invalid', instant=true)],
              steps=[[null, 'green'], [1, 'orange']], decimals=0), 6, 4],
      [p.stat('Samples dropped', 'Samples left out by a bound (max_series, the total per rule, name and label caps) or of an unsupported type, in the time range.',
              [target('sum(increase(mde_script_metrics_dropped_total{%s}[$__range])) or vector(0)' % TSM, 'dropped', instant=true)],
              steps=[[null, 'green'], [1, 'orange']], decimals=0), 6, 4],
      [p.table('Latest $family per machine',
               "Each machine's value of the chosen family from its latest transcript, with the sample's own labels and the machine's device group, OS and health (mde_machine_info). Machines whose context is not read yet are always shown.",
               [target(inContext(family), '', 'A', instant=true, format='table')],
               rename={ Value: 'value' }, sortBy=['value', false], transcripts=true), 24, 10],
      [p.timeseries('$family by device group', 'Average of the chosen family over the machines of each device group.',
                    [target('avg by (rbac_group) (%s * on (tenant, machine) group_left (rbac_group) mde_machine_info{%s,rbac_group=~"$rbac_group"})'
                            % [family, T], '{{rbac_group}}')]), 12, 8],
      [p.table('Last transcript per machine', 'When the current set of each machine and script was produced (the action\'s lastUpdateDateTimeUtc).',
               [target('1000 * (%s)' % inContext(last), '', 'A', instant=true, format='table')],
               rename={ Value: 'produced' }, unitOverrides={ produced: 'dateTimeAsIso' }, sortBy=['produced', false],
               transcripts=true), 12, 8],
    ],
  );

local quota(config) =
  local used = 'mde_api_quota_used{%s}' % T;
  local limit = 'mde_api_quota_limit{%s}' % T;
  local left(window) =
    local sel = '%s,window="%s"' % [T, window];
    'min by (tenant, endpoint) (mde_api_quota_remaining{%s} / (mde_api_quota_limit{%s} > 0))' % [sel, sel];
  local low = [[null, 'red'], [0.1, 'orange'], [0.25, 'green']];
  local latency(q, name, ref) =
    target('histogram_quantile(%s, sum by (le, endpoint) (rate(mde_api_request_duration_seconds_bucket{%s}[$__rate_interval])))'
           % [q, T], name + ' {{endpoint}}', ref, exemplar=true);
  p.dashboard(
    config,
    'mde-lr-api-quota',
    'MDE Live Response / API quota',
    'MDE API quota (100 calls/min and 1500 calls/h per endpoint): used and left per window, throttling, Retry-After, backlog waiting for quota, request latency.',
    panels=[
      [p.row('Quota windows'), 24, 1],
      [p.bargauge('Quota left, 1 minute window',
                  'Share of the 100 calls/min budget the exporter may still spend, per endpoint (endpoint="all" for a shared budget); lowered after 429s.',
                  [target(left('1m'), '{{tenant}} {{endpoint}}', instant=true)], steps=low), 12, 6],
      [p.bargauge('Quota left, 1 hour window', 'Share of the 1500 calls/h budget the exporter may still spend, per endpoint.',
                  [target(left('1h'), '{{tenant}} {{endpoint}}', instant=true)], steps=low), 12, 6],
      [p.timeseries('Calls used per window', 'Calls counted in each quota window, with its limit.',
                    [
                      target('sum by (tenant, endpoint, window) (%s)' % used, '{{tenant}} {{endpoint}} {{window}}', 'A'),
                      target('max by (window) (%s)' % limit, 'limit {{window}}', 'B'),
                    ]), 12, 8],
      [p.timeseries('Calls left per window', 'Calls the exporter may still make in each window.',
                    [target('sum by (tenant, endpoint, window) (mde_api_quota_remaining{%s})' % T,
                            '{{tenant}} {{endpoint}} {{window}}')]), 12, 8],
      [p.row('Throttling and backlog'), 24, 1],
      [p.timeseries('Throttled responses (429)', '429 Too Many Requests answers per second, by endpoint.',
                    [target('sum by (tenant, endpoint) (rate(mde_api_throttled_total{%s}[$__rate_interval]))' % T,
                            '{{tenant}} {{endpoint}}')], unit='ops'), 8, 8],
      [p.timeseries('Retry-After', 'The last Retry-After the API sent, by endpoint.',
                    [target('max by (tenant, endpoint) (mde_api_retry_after_seconds{%s})' % T,
                            '{{tenant}} {{endpoint}}')], unit='s'), 8, 8],
      [p.timeseries('Backlog waiting for quota', 'Finished command results waiting to be retrieved.',
                    [target('sum by (tenant) (mde_liveresponse_pending_results{%s})' % T, '{{tenant}}')],
                    steps=[[null, 'green'], [100, 'orange']]), 8, 8],
      [p.row('Requests'), 24, 1],
      [p.timeseries('API requests by endpoint and code', 'Requests per second; code="error" is a transport failure.',
                    [target('sum by (endpoint, code) (rate(mde_api_requests_total{%s}[$__rate_interval]))' % T,
                            '{{endpoint}} {{code}}', exemplar=true)], unit='reqps', stack=true), 12, 8],
      [p.timeseries('API request latency', 'p50 and p95 request duration by endpoint.',
                    [latency('0.95', 'p95', 'A'), latency('0.5', 'p50', 'B')], unit='s'), 12, 8],
    ],
  );

local health(config) =
  local okBad = [[null, 'red'], [1, 'green']];
  local pollDuration(part) = 'mde_exporter_poll_duration_seconds_%s{%s}' % [part, T];
  p.dashboard(
    config,
    'mde-lr-exporter-health',
    'MDE Live Response / Exporter health',
    'Exporter self-health: up, poll success and age, poll duration, token acquisition, config reload, result fetch failures by reason.',
    panels=[
      [p.row('Exporter'), 24, 1],
      [p.stat('Exporters up', 'Scrape targets of the selected jobs that answer.',
              [target('sum(up{%s})' % J, 'up', instant=true)], steps=okBad, decimals=0), 6, 4],
      [p.stat('Config reload', '1 if the last configuration reload succeeded.',
              [target('min(mde_exporter_config_last_reload_successful{%s})' % J, 'reload', instant=true)],
              steps=okBad, decimals=0), 6, 4],
      [p.stat('Token acquisition', 'Per tenant: 1 if the last OAuth2 token request succeeded.',
              [target('mde_exporter_token_success{%s}' % T, '{{tenant}}', instant=true)], steps=okBad,
              decimals=0), 6, 4],
      [p.table('Build', 'Version, revision and rustc of each exporter.',
               [target('mde_exporter_build_info{%s}' % J, '', instant=true, format='table')],
               exclude=['Value']), 6, 4],
      [p.row('Polls'), 24, 1],
      [p.timeseries('Poll success', '1 if the last poll of the tenant succeeded.',
                    [target('mde_exporter_poll_success{%s}' % T, '{{tenant}}')], max=1), 8, 8],
      [p.timeseries('Time since last successful poll', 'Age of the latest successful poll per tenant.',
                    [target('time() - mde_exporter_last_poll_success_timestamp_seconds{%s}' % T, '{{tenant}}')],
                    unit='s', steps=[[null, 'green'], [900, 'red']]), 8, 8],
      [p.timeseries('Poll duration', 'p95 and average poll duration per tenant.',
                    [
                      target('histogram_quantile(0.95, sum by (le, tenant) (rate(%s[$__rate_interval])))' % pollDuration('bucket'),
                             'p95 {{tenant}}', 'A', exemplar=true),
                      target('sum by (tenant) (rate(%s[$__rate_interval])) / sum by (tenant) (rate(%s[$__rate_interval]))'
                             % [pollDuration('sum'), pollDuration('count')], 'avg {{tenant}}', 'B'),
                    ], unit='s'), 8, 8],
      [p.row('Results and API'), 24, 1],
      [p.timeseries('Result fetch failures by reason', 'Command results given up, per second, by reason.',
                    [target('sum by (tenant, reason) (rate(mde_liveresponse_result_fetch_failures_total{%s}[$__rate_interval]))' % T,
                            '{{tenant}} {{reason}}', exemplar=true)], unit='ops', stack=true), 12, 8],
      [p.timeseries('API responses by code',
                    'MDE API and token endpoint answers per second, by HTTP code ("error" = transport failure).',
                    [target('sum by (code) (rate(mde_api_requests_total{%s}[$__rate_interval]))' % T, '{{code}}',
                            exemplar=true)],
                    unit='reqps', stack=true), 12, 8],
    ],
  );

{
  // File name (without .json) -> dashboard.
  grafanaDashboards+:: {
    'mde-lr-overview': overview($._config),
    'mde-lr-api-quota': quota($._config),
    'mde-lr-exporter-health': health($._config),
    'mde-lr-script-results': scriptResults($._config),
  },
}
