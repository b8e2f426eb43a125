#!/usr/bin/env node
// Scores comprehensive prompts written for build/data/pairs/test.jsonl against its facts.
//
//   node tools/data/pairs/eval_pairs.js PRED.jsonl [--data build/data/pairs] [--limit N] [--json]
//
// --limit N: score the first N test records only (PRED.jsonl then has N lines).
// PRED.jsonl: one line per test record, in order, each {"output": "..."} (test.jsonl and
// test_baseline.jsonl have that shape, so both can be scored as they are).
// Reports: facts_stated (share of the context's facts stated: place, country, day, time, each
// POI with its distance, preferences, language, weather), invented_share (mentions of
// distances, clock times, weekdays, language names, brand names or city names that are not in
// the record's context, over all such mentions), records_with_invented, private_leaks (records
// that repeat the cell id, a recent visit or personal data from the prompt), requests_stated
// (share of the records with a request whose prompt states it: one of the record's request
// sentences or its concise prompt, ignoring case).
'use strict';
const fs = require('fs');
const path = require('path');
const C = require('./common');

const esc = (x) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const reWord = (w) => new RegExp(`(^|[^\\p{L}\\p{N}])${esc(w)}(?=$|[^\\p{L}\\p{N}])`, 'gu');

// The integer counts behind the scores (src/edge/score.c computes the same, for netgpt eval).
function counts(preds, facts, vocab) {
  let nFacts = 0, stated = 0, mentions = 0, invented = 0, recInv = 0, leaks = 0, requests = 0, reqStated = 0;
  const brandRe = vocab.brands.filter((b) => b.length >= 3).map((b) => [b, reWord(b)]);
  const cityRe = vocab.cities.filter((c) => c.length >= 4).map((c) => [c, reWord(c)]);
  facts.forEach((rec, i) => {
    const text = (preds[i] && preds[i].output) || '';
    const lower = text.toLowerCase();
    const allowed = { dist: new Set(), time: new Set(), day: new Set(), lang: new Set(), names: new Set() };
    for (const f of rec.facts) {
      nFacts++;
      if (f.type === 'poi') {
        allowed.dist.add(f.distance); allowed.names.add(f.name);
        if (text.includes(f.name) && text.includes(f.distance)) stated++;
      } else {
        if (f.type === 'time') allowed.time.add(f.value);
        if (f.type === 'day') allowed.day.add(f.value);
        if (f.type === 'language') allowed.lang.add(f.value);
        if (f.type === 'place' || f.type === 'country') allowed.names.add(f.value);
        if (lower.includes(String(f.value).toLowerCase())) stated++;
      }
    }
    // strip allowed names (POIs, place) before looking for other names inside them
    let bare = text;
    for (const n of [...allowed.names].sort((a, b) => b.length - a.length)) bare = bare.split(n).join(' ');
    let inv = 0, men = 0;
    const count = (re, ok) => { for (const m of text.matchAll(re)) { men++; if (!ok(m[0])) inv++; } };
    count(/\b\d+(?:\.\d)? ?(?:m|km)\b/g, (s) => allowed.dist.has(s.replace(/(\d)(m|km)$/, '$1 $2')));
    count(/\b\d{1,2}:\d{2}\b/g, (s) => allowed.time.has(s));
    for (const d of C.DAYS) count(new RegExp(`\\b${d}\\b`, 'g'), () => allowed.day.has(d) || !bare.includes(d));
    for (const L of Object.values(C.LANGS)) count(new RegExp(`\\b${L}\\b`, 'g'), () => allowed.lang.has(L) || !bare.includes(L));
    for (const [b, re] of brandRe) if (re.test(bare)) { men++; inv++; re.lastIndex = 0; } else re.lastIndex = 0;
    for (const [c, re] of cityRe) if (re.test(bare)) { men++; inv++; re.lastIndex = 0; } else re.lastIndex = 0;
    men += [...allowed.names].filter((n) => text.includes(n)).length;
    mentions += men; invented += inv; if (inv) recInv++;
    const noPlace = rec.facts.filter((f) => f.type === 'place' || f.type === 'country').reduce((t, f) => t.split(f.value).join(' '), text);
    if (rec.private.some((p) => noPlace.includes(p.value))) leaks++;
    if (rec.request) {
      requests++;
      const says = [rec.request.concise, ...rec.request.asks].filter(Boolean);
      if (says.some((a) => lower.includes(a.toLowerCase()))) reqStated++;
    }
  });
  return { records: facts.length, facts: nFacts, stated, mentions, invented, records_with_invented: recInv, leaks, requests, requests_stated: reqStated };
}

function score(preds, facts, vocab) {
  const c = counts(preds, facts, vocab);
  const n = c.records;
  return {
    records: n, facts: c.facts, facts_stated: +(c.stated / c.facts).toFixed(4),
    invented_share: c.mentions ? +(c.invented / c.mentions).toFixed(4) : 0,
    records_with_invented: +(c.records_with_invented / n).toFixed(4), private_leaks: +(c.leaks / n).toFixed(4),
    requests_stated: c.requests ? +(c.requests_stated / c.requests).toFixed(4) : 0,
  };
}

function readJsonl(f) {
  return fs.readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

function main() {
  const pred = process.argv[2];
  if (!pred || pred.startsWith('--')) {
    console.error('usage: node tools/data/pairs/eval_pairs.js PRED.jsonl [--data build/data/pairs] [--limit N] [--json]');
    process.exit(2);
  }
  const dir = path.resolve(C.arg('--data', path.join(C.ROOT, 'build', 'data', 'pairs')));
  let facts = readJsonl(path.join(dir, 'test_facts.jsonl'));
  const limit = C.arg('--limit', null);
  if (limit !== null) facts = facts.slice(0, Number(limit));
  const vocab = JSON.parse(fs.readFileSync(path.join(dir, 'vocab.json'), 'utf8'));
  let preds = readJsonl(pred);
  if (limit !== null) preds = preds.slice(0, facts.length);
  if (preds.length !== facts.length) {
    console.error(`eval_pairs: ${pred} has ${preds.length} lines, test_facts.jsonl ${facts.length}`);
    process.exit(1);
  }
  const s = score(preds, facts, vocab);
  if (process.argv.includes('--json')) console.log(JSON.stringify(s));
  else console.log(Object.entries(s).map(([k, v]) => `${k} ${v}`).join('\n'));
}
if (require.main === module) main();
module.exports = { counts, score };
