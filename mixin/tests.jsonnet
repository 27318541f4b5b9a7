// Tests of the _config knobs, evaluated by scripts/render_mixin.py on every render (a failed
// assert stops it). The committed render covers the defaults; these cover overrides.
local mixin = import 'mixin.libsonnet';
// By name; the burn-rate alert has one rule per window pair, keyed `name/long`.
local alerts(m) = { [r.alert + (if std.objectHas(r.labels, 'long') then '/' + r.labels.long else '')]: r
                    for g in m.prometheusAlerts.groups for r in g.rules };
local with(config) = alerts(mixin { _config+:: config });

local defaults = alerts(mixin);
local paging = with({ scriptFailedSeverity: 'critical', scriptFailedFor: '' });
local renamed = with({ jobSelector: 'job="mde-lr"' });
local tuned = with({
  pollStaleThreshold: '1h',
  runbookURLPattern: 'https://wiki.example/runbooks/%s',
  apiThrottledFor: '20m',
});
local failed = 'MdeLiveResponseScriptFailed';
local stuck = with({ actionStuckThreshold: '1d' });
local sessions = mixin { _config+:: { sessionLimit: 40, sessionLimitByTenant: { contoso: 25 }, sessionCapacityLowRatio: 0.9 } };
local sessionsAlerts = alerts(sessions);
local limitRule = [r for g in sessions.prometheusRules.groups for r in g.rules
                   if std.objectHas(r, 'record') && r.record == 'mde:liveresponse_session_limit:count'];

assert defaults[failed].labels.severity == 'warning' && defaults[failed]['for'] == '15m'
       : 'a failed script warns after 15m by default';
assert paging[failed].labels.severity == 'critical' && !std.objectHas(paging[failed], 'for')
       : 'scriptFailedSeverity/For make it page at once';
assert renamed.MdeExporterDown.expr == 'up{job="mde-lr"} == 0' : 'jobSelector reaches MdeExporterDown';
assert tuned.MdeExporterPollStale.expr == 'time() - mde_exporter_last_poll_success_timestamp_seconds > 3600'
       && std.length(std.findSubstr('(threshold 1 hour)', tuned.MdeExporterPollStale.annotations.description)) == 1
       : 'pollStaleThreshold sets the expression and the description';
assert tuned.MdeApiThrottled['for'] == '20m'
       && std.length(std.findSubstr('for 20 minutes', tuned.MdeApiThrottled.annotations.description)) == 1
       : 'the description quotes the for: in force';
assert [a for a in std.objectFields(tuned)
        if tuned[a].annotations.runbook_url != 'https://wiki.example/runbooks/' + std.asciiLower(tuned[a].alert)] == []
       : 'runbookURLPattern sets every runbook_url';

assert stuck.MdeLiveResponseActionStuck.expr
       == 'time() - mde_liveresponse_in_flight_oldest_creation_timestamp_seconds > 86400'
       && std.length(std.findSubstr('(threshold 1 day)', stuck.MdeLiveResponseActionStuck.annotations.description)) == 1
       : 'actionStuckThreshold sets the expression and the description';
assert limitRule[0].expr == 'vector(40)' && !std.objectHas(limitRule[0], 'labels')
       && limitRule[1].expr == 'vector(25)' && limitRule[1].labels == { tenant: 'contoso' }
       && std.length(std.findSubstr('* 0.9', sessionsAlerts.MdeLiveResponseSessionCapacityLow.expr)) == 1
       && std.length(std.findSubstr('90% of the', sessionsAlerts.MdeLiveResponseSessionCapacityLow.annotations.description)) == 1
       && std.length(std.findSubstr('(default 40)', sessionsAlerts.MdeLiveResponseSessionCapacityLow.annotations.description)) == 1
       : 'sessionLimit, sessionLimitByTenant and sessionCapacityLowRatio reach the recorded limits, the alert and its description';
assert [r for g in mixin.prometheusRules.groups for r in g.rules
        if std.objectHas(r, 'record') && r.record == 'mde:liveresponse_session_limit:count'][0].expr == 'vector(50)'
       && defaults.MdeLiveResponseActionStuck.expr
          == 'time() - mde_liveresponse_in_flight_oldest_creation_timestamp_seconds > 3600'
       : 'by default a tenant may have 50 sessions (run-live-response page, 2025-12-31) and an action is stuck after 1h (2-hour offline queue)';

local linked = with({ exporterExternalURL: 'https://mde-lr.example:9443/' });
assert [a for a in ['MdeLiveResponseScriptFailed', 'MdeLiveResponseScriptErrors', 'MdeLiveResponseScriptNotRun']
        if std.length(std.findSubstr('https://mde-lr.example:9443/transcripts?tenant={{ $labels.tenant | urlquery }}&machine=',
                                     linked[a].annotations.transcript_url)) != 1] == []
       && std.length(std.findSubstr('{{- else -}}https://mde-lr.example:9443/{{- end -}}',
                                    linked.MdeLiveResponseScriptFailed.annotations.transcript_url)) == 1
       : 'exporterExternalURL (a trailing slash dropped) is the base of every transcript_url';

local fewer = with({ alertTopSignatures: 5 });
assert std.length(std.findSubstr('sort_desc(topk(5, max by (signature, template) (mde_liveresponse_script_failure_signatures{tenant=%q,script=%q,signature!="other"})))',
                                 fewer.MdeLiveResponseScriptFailed.annotations.description)) == 1
       && std.length(std.findSubstr('topk(5,', fewer.MdeLiveResponseScriptErrors.annotations.description)) == 1
       && std.length(std.findSubstr('topk(1,', fewer.MdeLiveResponseScriptFailed.annotations.top_signature)) == 1
       && std.length(std.findSubstr('https://mde-lr.example:9443/signatures?tenant=',
                                    linked.MdeLiveResponseScriptFailed.annotations.signature_url)) == 1
       : 'alertTopSignatures sets how many signatures the descriptions name; exporterExternalURL is the base of signature_url (#36)';

local slo = mixin { _config+:: {
  scriptSLOs: { default: 0.9, scripts: { 'a.ps1': 0.999 } },
  scriptErrorBudgetBurn: [{ severity: 'critical', long: '2h', short: '10m', factor: 10, 'for': '' }],
} };
local sloRules = [r for g in slo.prometheusRules.groups for r in g.rules if std.objectHas(r, 'record')];
local sloAlerts = [r for g in slo.prometheusAlerts.groups for r in g.rules
                   if r.alert == 'MdeLiveResponseScriptErrorBudgetBurn'];
assert [r.expr for r in sloRules if r.record == 'mde:liveresponse_script_slo_objective:ratio']
       == ['vector(0.9)', 'vector(0.999)']
       && [r.labels for r in sloRules if r.record == 'mde:liveresponse_script_slo_objective:ratio'
           && std.objectHas(r, 'labels')] == [{ script: 'a.ps1' }]
       : 'scriptSLOs: the default and each override become recorded objectives';
assert [r.record for r in sloRules if std.startsWith(r.record, 'tenant_script:mde_liveresponse_script_bad_runs:')]
       == ['tenant_script:mde_liveresponse_script_bad_runs:ratio_rate10m',
           'tenant_script:mde_liveresponse_script_bad_runs:ratio_rate2h']
       && std.length(sloAlerts) == 1 && !std.objectHas(sloAlerts[0], 'for')
       && sloAlerts[0].labels == { severity: 'critical', long: '2h', short: '10m' }
       && std.length(std.findSubstr('> 10\nand\n', sloAlerts[0].expr)) == 1
       && std.length(std.findSubstr('the whole budget is gone in 3 days', sloAlerts[0].annotations.description)) == 1
       : 'scriptErrorBudgetBurn sets the recorded windows, the rules, their labels and descriptions';

// See: #34
local files = with({ tenantFileFailingFor: '30m', tenantFileFailingSeverity: 'critical' });
assert files.MdeExporterTenantFileFailing['for'] == '30m'
       && files.MdeExporterTenantFileFailing.labels.severity == 'critical'
       && std.length(std.findSubstr('for 30 minutes', files.MdeExporterTenantFileFailing.annotations.description)) == 1
       && defaults.MdeExporterTenantsRefused['for'] == '10m'
       : 'tenantFileFailingFor/Severity set the for:, the severity and the description';

{ alerts: std.length(defaults), ok: true }
