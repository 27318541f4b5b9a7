// Small helpers shared by the rules and the dashboards of the mixin.
{
  local units = { s: 1, m: 60, h: 3600, d: 86400 },
  local words = { s: 'second', m: 'minute', h: 'hour', d: 'day' },

  local parse(d) =
    local unit = std.substr(d, std.length(d) - 1, 1);
    local n = std.substr(d, 0, std.length(d) - 1);
    assert std.objectHas(units, unit) && std.length(n) > 0 :
           'duration %s: expected a number and one unit of s, m, h, d (e.g. 15m)' % std.toString(d);
    { n: std.parseInt(n), unit: unit },

  // '15m' -> 900. Only the single-unit form ('90s', '15m', '2h', '1d') is accepted.
  seconds(d):: local p = parse(d); p.n * units[p.unit],

  // '15m' -> '15 minutes', '1h' -> '1 hour': for alert descriptions that quote a duration.
  humanize(d):: local p = parse(d); '%d %s%s' % [p.n, words[p.unit], if p.n == 1 then '' else 's'],

  // The `for:` of an alert, left out when empty or zero (the alert fires on the first evaluation).
  forClause(d):: if d == '' || d == null || self.seconds(d) == 0 then {} else { 'for': d },
}
