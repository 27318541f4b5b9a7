#!/usr/bin/env node
// Type-check Grafana dashboard JSON against @grafana/schema's `Dashboard` type.
//
// For each JSON file, writes `<name>.ts` into OUT_DIR containing
//   export const dashboard = <the JSON as an object literal> satisfies Dashboard;
// and tsc then checks it (excess properties included, since it is an object literal).
// A few schema fields are TypeScript *string enums* (thresholds mode, field color mode, value
// mapping type): a JSON string can never be assignable to them, although the runtime value is
// the same string, so those values are emitted as the enum member whose value they are, and an
// unknown value is reported as an error.
//
// Usage: dashboards_typecheck.mjs OUT_DIR FILE.json...
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { basename } from 'node:path';

const ENUMS = {
  // key path suffix → enum name and its values
  'thresholds.mode': ['ThresholdsMode', { absolute: 'Absolute', percentage: 'Percentage' }],
  'color.mode': ['FieldColorModeId', null],
  'mappings[].type': ['MappingType', { value: 'ValueToText', range: 'RangeToText', regex: 'RegexToText', special: 'SpecialValue' }],
};

const [outDir, ...files] = process.argv.slice(2);
if (!outDir || files.length === 0) {
  console.error('usage: dashboards_typecheck.mjs OUT_DIR FILE.json...');
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });
let errors = 0;
const used = new Set();

function emit(value, path) {
  if (Array.isArray(value)) {
    return '[' + value.map((v) => emit(v, path + '[]')).join(',') + ']';
  }
  if (value !== null && typeof value === 'object') {
    return '{' + Object.entries(value).map(([k, v]) => JSON.stringify(k) + ':' + emit(v, path ? path + '.' + k : k)).join(',\n') + '}';
  }
  if (typeof value === 'string') {
    for (const [suffix, [enumName, members]] of Object.entries(ENUMS)) {
      if (path.endsWith(suffix)) {
        if (members === null) {
          used.add(enumName);
          return `(${JSON.stringify(value)} as ${enumName})`; // checked below against the enum's values
        }
        if (!(value in members)) {
          console.error(`${path}: ${JSON.stringify(value)} is not a ${enumName}`);
          errors++;
          return JSON.stringify(value);
        }
        used.add(enumName);
        return `${enumName}.${members[value]}`;
      }
    }
  }
  return JSON.stringify(value);
}

for (const file of files) {
  const json = JSON.parse(readFileSync(file, 'utf8'));
  used.clear();
  const body = emit(json, '');
  const imports = ['Dashboard', ...used].join(', ');
  const src = `import { ${imports} } from '@grafana/schema';\n` +
    `export const dashboard = ${body} satisfies Dashboard;\n`;
  const out = `${outDir}/${basename(file, '.json').replace(/[^A-Za-z0-9_]/g, '_')}.ts`;
  writeFileSync(out, src);
  console.log(`wrote ${out}`);
}
process.exit(errors ? 1 : 0);
