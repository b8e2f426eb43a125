#!/usr/bin/env node
// Builds tests/testdata/pairs_refs/refs.jsonl, the fixture of tests/test_edge_complete.c that
// checks edge_fill_refs (src/edge/complete.c) against fillRefs (common.js), the rule the
// completion models' training data is written with.
//
//   node tools/data/pairs/make_refs_fixture.js [--data build/data/pairs] [--out tests/testdata/pairs_refs]
//
// One line per case, {"block", "text", "filled", "unresolved"}: the first 150 records of
// val_refs.jsonl (their filled text is the record of val.jsonl: the builder checks that), then
// texts written to probe the rule on blocks of the test split: references without a value,
// malformed references, braces that are text, and every reference in one text.
'use strict';
const fs = require('fs');
const path = require('path');
const C = require('./common');

const data = path.resolve(C.arg('--data', path.join(C.ROOT, 'build', 'data', 'pairs')));
const out = path.resolve(C.arg('--out', path.join(C.ROOT, 'tests', 'testdata', 'pairs_refs')));
const lines = (f) => fs.readFileSync(path.join(data, f), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));

const cases = [];
const add = (block, text) => {
  const counts = {};
  const filled = C.fillRefs(text, block, counts);
  cases.push({ block, text, filled, unresolved: counts.unresolved || 0 });
  return filled;
};
const refs = lines('val_refs.jsonl'), lit = lines('val.jsonl');
for (let i = 0; i < 150; i++) {
  if (add(refs[i].instruction, refs[i].output) !== lit[i].output) throw new Error(`val record ${i + 1} does not fill back`);
}
// probes on test blocks: with a cell, with km distances, without a user line, with many POIs
const test = lines('test.jsonl').map((r) => r.instruction);
const pick = (pred) => test.find(pred);
const blocks = [
  pick((b) => / \(cell /.test(b) && / km/.test(b)),
  pick((b) => !/\nuser: /.test(b)),
  pick((b) => /\nuser: [^\n]*language /.test(b) && (b.match(/ m(,|\n)| km(,|\n)/g) || []).length >= 4),
  pick((b) => /\nuser: /.test(b) && !/language /.test(b)),
  pick((b) => !/\nnearby /.test(b)),
  pick((b) => /\nuser: language [^\n]*recent: /.test(b)), // a user line without preferences
];
const probes = [
  'All: {place} / {day} / {time} / {language} / {prefs} / {request} / {poi1} {dist1} / {poi2} {dist2} / {poi3} {dist3} / {poi4} {dist4}.',
  'Beyond: {poi9} at {dist9}, {poi12}, {dist0}, {poi0}, {poi01}.',
  'Not references: {Place} { place} {place } {} {{place}} {poi} {1} {poi1a} {x1} {place1} {timezone}.',
  'Cut: {poi1 and {place',
  'Unicode around: «{place}»—{poi1}…{dist1}✓ {',
];
for (const b of blocks) if (b) for (const p of probes) add(b, p);
fs.mkdirSync(out, { recursive: true });
C.writeJsonl(path.join(out, 'refs.jsonl'), cases);
console.error(`make_refs_fixture: ${cases.length} cases (${cases.filter((c) => c.unresolved).length} with unresolved references) -> ${path.relative(process.cwd(), out)}`);
