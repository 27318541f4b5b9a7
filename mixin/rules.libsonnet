// Recording rules: the quota thresholds as recorded constants, and the aggregations the alerts
// (and anyone's own queries) use. Names follow level:metric:operations (scripts/check_rules.py).
local util = import 'lib/util.libsonnet';

{
  prometheusRules+:: {
    groups+: [
      {
        name: 'mde-liveresponse.thresholds',
        // Quota share (1 - remaining / limit) at or above which MdeApiQuotaNearlyExhausted
        // fires, one series per window. A recorded constant rather than a number in the alert,
        // so a Prometheus can add series with extra labels (e.g. a `tenant`) in its own rules.
        local ratios = $._config.quotaNearlyExhaustedRatio,
        rules: [
          {
            record: 'mde:api_quota_nearly_exhausted_threshold:ratio',
            expr: 'vector(%g)' % ratios[window],
            labels: { window: window },
          }
          for window in std.sort(std.objectFields(ratios), util.seconds)
        ] + [
          // Concurrent Live Response sessions per tenant (the run-live-response page of
          // 2025-12-31: 50; older pages: 25; queued actions appear to count too): the default
          // (no tenant label) and one series per override in sessionLimitByTenant.
          {
            record: 'mde:liveresponse_session_limit:count',
            expr: 'vector(%d)' % $._config.sessionLimit,
          },
        ] + [
          {
            record: 'mde:liveresponse_session_limit:count',
            expr: 'vector(%d)' % $._config.sessionLimitByTenant[tenant],
            labels: { tenant: tenant },
          }
          for tenant in std.objectFields($._config.sessionLimitByTenant)
        ] + [
          // The limit of every tenant the exporter reports in-flight actions for: its
          // override, or the default. Used by MdeLiveResponseSessionCapacityLow.
          {
            record: 'tenant:mde_liveresponse_session_limit:count',
            expr: |||
              (
                group by (tenant) (mde_liveresponse_actions_in_flight)
                  * on (tenant) group_left () mde:liveresponse_session_limit:count{tenant!=""}
              )
              or on (tenant)
              (
                group by (tenant) (mde_liveresponse_actions_in_flight)
                  * on () group_left () mde:liveresponse_session_limit:count{tenant=""}
              )
            |||,
          },
        ],
      },
      {
        name: 'mde-liveresponse.records',
        rules: [
          // Share of each quota window no longer available to the exporter, per
          // tenant/endpoint/window (endpoint="all" when the tenant shares one budget):
          // 1 - remaining/limit. Computed from `remaining` rather than `used` because the
          // exporter lowers its own budget after 429s (another client spends the same quota),
          // so it can run out with `used` well under the limit. Used by MdeApiQuotaNearlyExhausted.
          {
            record: 'tenant_endpoint_window:mde_api_quota_exhausted:ratio',
            expr: 'clamp(1 - mde_api_quota_remaining / (mde_api_quota_limit > 0), 0, 1)',
          },
          // Machines whose last run of a script exited non-zero. Used by MdeLiveResponseScriptFailed.
          {
            record: 'tenant_script:mde_liveresponse_machines_failing:count',
            expr: 'count by (tenant, script) (mde_liveresponse_script_exit_code != 0)',
          },
          // Machines whose last run of a script wrote to stderr. Used by MdeLiveResponseScriptErrors.
          {
            record: 'tenant_script:mde_liveresponse_machines_with_errors:count',
            expr: 'count by (tenant, script) (mde_liveresponse_script_errors_present == 1)',
          },
          // The same two counts by device group: each per-machine series joined with
          // mde_machine_info (group_left(rbac_group)) so Alertmanager can route by device
          // group. Machines whose context is not read yet (or not found) count with an empty
          // rbac_group, through the `or`: a failure never waits for machine context.
          // Used by MdeLiveResponseScriptFailed and MdeLiveResponseScriptErrors. See: #10
          {
            record: 'tenant_script_rbac_group:mde_liveresponse_machines_failing:count',
            expr: |||
              count by (tenant, script, rbac_group) (
                  (mde_liveresponse_script_exit_code != 0)
                    * on (tenant, machine) group_left (rbac_group) mde_machine_info
                or on (tenant, machine, script)
                  (mde_liveresponse_script_exit_code != 0)
              )
            |||,
          },
          {
            record: 'tenant_script_rbac_group:mde_liveresponse_machines_with_errors:count',
            expr: |||
              count by (tenant, script, rbac_group) (
                  (mde_liveresponse_script_errors_present == 1)
                    * on (tenant, machine) group_left (rbac_group) mde_machine_info
                or on (tenant, machine, script)
                  (mde_liveresponse_script_errors_present == 1)
              )
            |||,
          },
          // Machines whose latest attempt of a script never ran.
          {
            record: 'tenant_script:mde_liveresponse_machines_not_run:count',
            expr: 'count by (tenant, script) (mde_liveresponse_script_not_run_current == 1)',
          },
          // The same by device group, joined like the failing count above, so that
          // Alertmanager routes a not-run alert to the team of the device group too. Used by
          // MdeLiveResponseScriptNotRun. (#22)
          {
            record: 'tenant_script_rbac_group:mde_liveresponse_machines_not_run:count',
            expr: |||
              count by (tenant, script, rbac_group) (
                  (mde_liveresponse_script_not_run_current == 1)
                    * on (tenant, machine) group_left (rbac_group) mde_machine_info
                or on (tenant, machine, script)
                  (mde_liveresponse_script_not_run_current == 1)
              )
            |||,
          },
          // Share of retrieved transcripts that failed over the last hour, per script.
          {
            record: 'tenant_script:mde_liveresponse_script_failures:ratio_rate1h',
            expr: |||
              sum by (tenant, script) (rate(mde_liveresponse_script_failures_total[1h]))
                / (sum by (tenant, script) (rate(mde_liveresponse_script_runs_total[1h])) > 0)
            |||,
          },
        ],
      },
      {
        // Per-script objectives and the bad-run ratios of the error-budget burn alerts (#22).
        name: 'mde-liveresponse.slo',
        local slo = $._config.scriptSLOs,
        local windows = std.set(std.flattenArrays([[b.long, b.short] for b in $._config.scriptErrorBudgetBurn]),
                                util.seconds),
        local scripts = 'group by (tenant, script) (mde_liveresponse_script_runs_total or mde_liveresponse_script_not_run_total)',
        rules: [
          // The objectives: the default (no script label) and one series per override.
          {
            record: 'mde:liveresponse_script_slo_objective:ratio',
            expr: 'vector(%g)' % slo.default,
          },
        ] + [
          {
            record: 'mde:liveresponse_script_slo_objective:ratio',
            expr: 'vector(%g)' % slo.scripts[script],
            labels: { script: script },
          }
          for script in std.objectFields(slo.scripts)
        ] + [
          // The objective of every script the exporter has seen, per tenant: its override, or
          // the default.
          {
            record: 'tenant_script:mde_liveresponse_script_slo_objective:ratio',
            expr: |||
              (
                %(scripts)s
                  * on (script) group_left () mde:liveresponse_script_slo_objective:ratio{script!=""}
              )
              or on (tenant, script)
              (
                %(scripts)s
                  * on () group_left () mde:liveresponse_script_slo_objective:ratio{script=""}
              )
            ||| % { scripts: scripts },
          },
        ] + [
          // Share of a script's attempts over the window that were bad: exit code not 0, or
          // never ran. The `or ... * 0` term makes it 0 (not absent) for a script that ran
          // without failing while the failure counter does not exist yet; not_run has a
          // `reason` label, so its series always add up. Absent when nothing was attempted.
          {
            record: 'tenant_script:mde_liveresponse_script_bad_runs:ratio_rate%s' % w,
            expr: |||
              sum by (tenant, script) (
                  rate(mde_liveresponse_script_failures_total[%(w)s])
                or rate(mde_liveresponse_script_not_run_total[%(w)s])
                or rate(mde_liveresponse_script_runs_total[%(w)s]) * 0
              )
              /
              (sum by (tenant, script) (
                  rate(mde_liveresponse_script_runs_total[%(w)s])
                or rate(mde_liveresponse_script_not_run_total[%(w)s])
              ) > 0)
            ||| % { w: w },
          }
          for w in windows
        ],
      },
    ],
  },
}
