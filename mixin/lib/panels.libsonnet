// Building blocks of the dashboards: queries, panels, the grid layout, variables and the
// dashboard frame. Every panel and query uses the `datasource` variable (no datasource uid is
// hard-coded), so the JSON works with any Prometheus datasource.
{
  DS:: { type: 'prometheus', uid: '${datasource}' },
  local DS = self.DS,

  // A query. Instant queries feed stats, gauges and tables; `exemplar` asks Grafana to draw the
  // exemplars (trace ids) of the series on a time series panel.
  target(expr, legend='__auto', ref='A', instant=false, format=null, exemplar=false)::
    {
      datasource: DS,
      editorMode: 'code',
      expr: expr,
      legendFormat: legend,
      range: !instant,
      instant: instant,
      refId: ref,
    }
    + (if format != null then { format: format } else {})
    + (if exemplar then { exemplar: true } else {}),

  // steps: [[value or null, color], ...], the first value null (= -Infinity).
  thresholds(steps):: { mode: 'absolute', steps: [{ color: s[1], value: s[0] } for s in steps] },
  GREEN:: [[null, 'green']],

  fieldDefaults(unit='short', steps=self.GREEN, decimals=null, min=null, max=null, custom=null)::
    { unit: unit, thresholds: $.thresholds(steps) }
    + (if decimals != null then { decimals: decimals } else {})
    + (if min != null then { min: min } else {})
    + (if max != null then { max: max } else {})
    + (if custom != null then { custom: custom } else {}),

  timeseries(title, description, targets, unit='short', stack=false, steps=self.GREEN, min=0, max=null):: {
    type: 'timeseries',
    title: title,
    description: description,
    datasource: DS,
    targets: targets,
    fieldConfig: {
      defaults: $.fieldDefaults(unit, steps, min=min, max=max, custom={
        drawStyle: 'line',
        lineWidth: 1,
        fillOpacity: 10,
        showPoints: 'never',
        spanNulls: false,
        stacking: { mode: if stack then 'normal' else 'none', group: 'A' },
      }),
      overrides: [],
    },
    options: {
      legend: { displayMode: 'table', placement: 'bottom', showLegend: true, calcs: ['lastNotNull', 'max'] },
      tooltip: { mode: 'multi', sort: 'desc' },
    },
  },

  stat(title, description, targets, unit='short', steps=self.GREEN, decimals=null, colorMode='value'):: {
    type: 'stat',
    title: title,
    description: description,
    datasource: DS,
    targets: targets,
    fieldConfig: { defaults: $.fieldDefaults(unit, steps, decimals), overrides: [] },
    options: {
      reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
      colorMode: colorMode,
      graphMode: 'none',
      justifyMode: 'auto',
      orientation: 'auto',
      textMode: 'auto',
    },
  },

  bargauge(title, description, targets, unit='percentunit', steps=self.GREEN, max=1):: {
    type: 'bargauge',
    title: title,
    description: description,
    datasource: DS,
    targets: targets,
    fieldConfig: { defaults: $.fieldDefaults(unit, steps, min=0, max=max), overrides: [] },
    options: {
      reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
      displayMode: 'gradient',
      orientation: 'horizontal',
      showUnfilled: true,
    },
  },

  // Instant queries in table format, merged on their common labels.
  // A data link from a table row to the exporter's page of the latest transcript of that row's
  // tenant, machine and script (GET /transcripts, #22), under the `exporter_url` variable.
  transcriptLink:: {
    title: 'Latest transcript of ${__data.fields.machine} / ${__data.fields.script}',
    url: '${exporter_url}/transcripts?tenant=${__data.fields.tenant:percentencode}&machine=${__data.fields.machine:percentencode}&script=${__data.fields.script:percentencode}',
    targetBlank: true,
  },

  // transcripts: each row's `machine` cell links to that machine's latest transcript of the
  // row's script (the rows need tenant, machine and script columns).
  table(title, description, targets, exclude=[], rename={}, unitOverrides={}, sortBy=null, transcripts=false):: {
    type: 'table',
    title: title,
    description: description,
    datasource: DS,
    targets: targets,
    fieldConfig: {
      defaults: $.fieldDefaults('short', $.GREEN, custom={ align: 'auto', filterable: true }),
      overrides: [
        { matcher: { id: 'byName', options: field }, properties: [{ id: 'unit', value: unitOverrides[field] }] }
        for field in std.objectFields(unitOverrides)
      ] + (if transcripts then [
             { matcher: { id: 'byName', options: 'machine' }, properties: [{ id: 'links', value: [$.transcriptLink] }] },
           ] else []),
    },
    options: {
      showHeader: true,
      cellHeight: 'sm',
      footer: { show: false, reducer: ['sum'], fields: '' },
    } + (if sortBy != null then { sortBy: [{ displayName: sortBy[0], desc: sortBy[1] }] } else {}),
    transformations: [
      { id: 'merge', options: {} },
      {
        id: 'organize',
        options: {
          excludeByName: { [k]: true for k in ['Time', '__name__', 'job', 'instance'] + exclude },
          renameByName: rename,
          indexByName: {},
        },
      },
    ],
  },

  row(title):: { type: 'row', title: title, collapsed: false, panels: [] },

  // items: [[panel, width, height], ...] left to right, top to bottom; a row takes the full
  // width. Assigns ids (1, 2, ...) and gridPos.
  layout(items)::
    local step(state, item) =
      local p = item[0];
      local isRow = p.type == 'row';
      local w = if isRow then 24 else item[1];
      local h = if isRow then 1 else item[2];
      local wrap = state.x + w > 24 || isRow;
      local y = if wrap && state.x > 0 then state.y + state.lineH else state.y;
      local x = if wrap then 0 else state.x;
      local lineH = if wrap then 0 else state.lineH;
      local placed = p { id: std.length(state.out) + 1, gridPos: { h: h, w: w, x: x, y: y } };
      if isRow then
        { x: 0, y: y + 1, lineH: 0, out: state.out + [placed] }
      else
        { x: x + w, y: y, lineH: std.max(lineH, h), out: state.out + [placed] };
    std.foldl(step, items, { x: 0, y: 0, lineH: 0, out: [] }).out,

  // A label_values() query variable through the datasource variable. allValue '.*' makes
  // "All" a match-anything regex; without it Grafana sends the alternation of the values found.
  queryVariable(name, label, query, allValue='.*'):: {
    name: name,
    label: label,
    type: 'query',
    datasource: DS,
    query: { query: query, refId: 'PrometheusVariableQueryEditor-VariableQuery', qryType: 1 },
    hide: 0,
    includeAll: true,
    multi: true,
    options: [],
    refresh: 2,
    regex: '',
    skipUrlSync: false,
    sort: 1,
  } + (if allValue != null then { allValue: allValue } else {}),

  variables(withScript)::
    [
      {
        name: 'datasource',
        label: 'Data source',
        type: 'datasource',
        query: 'prometheus',
        hide: 0,
        includeAll: false,
        multi: false,
        options: [],
        refresh: 1,
        regex: '',
        skipUrlSync: false,
      },
      // The jobs that expose the exporter's own metrics, whatever they are called. "All" is the
      // list of those jobs, not '.*', so that up{job=~"$job"} does not count other targets.
      $.queryVariable('job', 'Job', 'label_values(mde_exporter_build_info, job)', allValue=null),
      $.queryVariable('tenant', 'Tenant', 'label_values(mde_exporter_poll_success{job=~"$job"}, tenant)'),
    ]
    + (if withScript then [
         $.queryVariable('script', 'Script',
                         'label_values(mde_liveresponse_script_runs_total{job=~"$job",tenant=~"$tenant"}, script)'),
         // Device groups of the machines with per-machine series (mde_machine_info). See: #10
         $.queryVariable('rbac_group', 'Device group',
                         'label_values(mde_machine_info{job=~"$job",tenant=~"$tenant"}, rbac_group)'),
       ] else []),

  // The exporter's URL as its users reach it (its --web.external-url), for the links to its
  // transcript pages; default config.exporterExternalURL, the URL of the alerts' transcript_url.
  exporterUrlVariable(config):: {
    name: 'exporter_url',
    label: 'Exporter URL',
    description: "The exporter's external URL (--web.external-url), where the tables' machine links lead",
    type: 'textbox',
    query: config.exporterExternalURL,
    current: { text: config.exporterExternalURL, value: config.exporterExternalURL },
    options: [{ selected: true, text: config.exporterExternalURL, value: config.exporterExternalURL }],
    hide: 0,
    skipUrlSync: false,
  },

  // extraVariables: more variables after job and tenant (and script and rbac_group with
  // withScript).
  dashboard(config, uid, title, description, panels, withScript=false, extraVariables=[]):: {
    uid: uid,
    title: title,
    description: description,
    tags: config.dashboardTags,
    editable: true,
    graphTooltip: 1,
    timezone: config.dashboardTimezone,
    schemaVersion: 39,
    version: 1,
    refresh: config.dashboardRefresh,
    time: { from: config.dashboardTimeFrom, to: 'now' },
    fiscalYearStartMonth: 0,
    liveNow: false,
    annotations: { list: [{
      builtIn: 1,
      datasource: { type: 'grafana', uid: '-- Grafana --' },
      enable: true,
      hide: true,
      iconColor: 'rgba(0, 211, 255, 1)',
      name: 'Annotations & Alerts',
      type: 'dashboard',
    }] },
    links: [{
      title: 'MDE Live Response',
      type: 'dashboards',
      tags: ['mde-liveresponse-exporter'],
      asDropdown: false,
      includeVars: true,
      keepTime: true,
      icon: 'external link',
      targetBlank: false,
      tooltip: '',
      url: '',
    }],
    templating: { list: $.variables(withScript) + extraVariables },
    panels: $.layout(panels),
  },
}
