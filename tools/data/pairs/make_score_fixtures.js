#!/usr/bin/env node
// Builds tests/testdata/pairs_score/, the fixtures of tests/test_score.c, which checks that
// src/edge/score.c (the scorer of `netgpt eval --pairs`) counts exactly what eval_pairs.js counts.
//
//   node tools/data/pairs/make_score_fixtures.js [--data build/data/pairs] [--out tests/testdata/pairs_score]
//   node tools/data/pairs/make_score_fixtures.js --c-tables
//
// Writes facts.jsonl (40 records of test_facts.jsonl, picked to cover private data of every
// kind, non-ASCII places, weather, many POIs), vocab.json (all brands, part of the cities, and
// made-up names outside the BMP, whose JS length counts two per character), prediction files (the
// reference prompts, the template baseline, and perturbed prompts: invented distances, times,
// days, languages, brands and cities; dropped facts; leaked private data; changed case; names
// beside non-ASCII characters and invalid UTF-8; random mixes of all of these) and expected.json:
// per prediction file, eval_pairs.js's counts in total and per record ([facts, stated, mentions,
// invented, leaks, requests, requests_stated]). The prediction files are read back as
// eval_pairs.js reads them, so invalid UTF-8 is scored as the U+FFFD it decodes to.
//
// --c-tables prints the two Unicode tables of src/edge/score.c (the code points of \p{L} and
// \p{N}, and toLowerCase) from this node's Unicode data.
'use strict';
const fs = require('fs');
const path = require('path');
const C = require('./common');
const { counts } = require('./eval_pairs');

const N_RECORDS = 40;
const SEED = 'netgpt-score-fixtures-v1';

function readJsonl(f) {
  return fs.readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

// ---------------------------------------------------------------- Unicode tables for score.c
function hex(c) { return '0x' + c.toString(16); }

function printTables() {
  // Letters and numbers, as ranges; unassigned code points join the ranges around them (they
  // do not occur in text, and the table halves).
  const ln = /[\p{L}\p{N}]/u, cn = /\p{Cn}/u;
  const ranges = [];
  let lo = -1, last = -1;
  for (let c = 0x80; c <= 0x10ffff; c++) {
    if (c >= 0xd800 && c < 0xe000) continue;
    const s = String.fromCodePoint(c);
    if (ln.test(s)) { if (lo < 0) lo = c; last = c; } else if (!cn.test(s) && lo >= 0) { ranges.push([lo, last]); lo = -1; }
  }
  if (lo >= 0) ranges.push([lo, last]);
  // toLowerCase of single code points, as runs {first, last, delta, stride}; U+0130 (lowers to
  // two code points) is left to the code.
  const runs = [];
  for (let c = 0x80; c <= 0x10ffff; c++) {
    if (c >= 0xd800 && c < 0xe000) continue;
    const s = String.fromCodePoint(c), l = s.toLowerCase();
    if (l === s || c === 0x130) continue;
    const d = l.codePointAt(0) - c, r = runs[runs.length - 1];
    if (r && r.d === d && (r.st ? c === r.e + r.st : c - r.s <= 2)) { r.st = c - r.e; r.e = c; } else runs.push({ s: c, e: c, d, st: 0 });
  }
  const lines = (items) => { // as many per line as fit in 110 columns
    const out = [];
    for (const it of items) {
      if (out.length && out[out.length - 1].length + 1 + it.length <= 110) out[out.length - 1] += ' ' + it;
      else out.push('    ' + it);
    }
    return out.join('\n');
  };
  console.log(`/* Unicode ${process.versions.unicode} */\n/* clang-format off */`);
  console.log(`static const uint32_t ln_ranges[][2] = {\n${lines(ranges.map(([a, b]) => `{${hex(a)}, ${hex(b)}},`))}\n};`);
  console.log(`static const lower_run lower_runs[] = {\n${lines(runs.map((r) => `{${hex(r.s)}, ${hex(r.e)}, ${r.d}, ${r.st || 1}},`))}\n};`);
  console.log('/* clang-format on */');
}

// ---------------------------------------------------------------- perturbations
// Characters put beside names: ASCII, letters and numbers of other scripts (no boundary for
// \p{L}\p{N}), marks, punctuation, symbols, spaces and format characters (a boundary).
const NEIGHBOURS = ['', ' ', ',', '.', '-', '_', 'x', '7', '(', 'é', 'ß', '店', 'д', 'ا', 'ก', '\u0301', '\u0331', '\u0e48',
  '\u064b', '٣', '²', '½', 'Ⅻ', '①', '—', '’', '«', '。', '、', '🙂', '\u00a0', 'Ａ', '１', '\u200d', '\u3000', 'ª', 'µ',
  '𝐀', '𠀀', '\ufffd', '\u00ad', '\u{e0001}', '\u{f0000}'];
const ASCII_NEIGHBOURS = ['', ' ', ',', '.', '-', '_', 'x', '7', '(', '!', '\n'];
// Made-up names outside the BMP: JS lengths 3 (a brand, too short for a city) and 4 (a city)
const SYNTHETIC = ['𠮷家', '𠮷野家'];
// Placeholders for raw invalid UTF-8, replaced in the bytes written
const INVALID = { '\u0001A': [0xc3], '\u0001B': [0xe2, 0x82], '\u0001C': [0xff], '\u0001D': [0xed, 0xa0, 0x80],
  '\u0001E': [0x80, 0x80], '\u0001F': [0xf0, 0x9f, 0x99] };

function makers(r, vocab, facts, all) {
  const pick = r.pick;
  const allowed = (t) => facts.facts.filter((f) => f.type === t);
  const num = () => String(r.int(0, 3) ? r.int(1, 999) : r.int(1000, 99999));
  const dist = () => {
    const pois = allowed('poi');
    if (pois.length && r.chance(0.3)) { const d = pick(pois).distance; return r.chance(0.5) ? d : d.replace(' ', ''); }
    return pick([() => `${num()} m`, () => `${num()}m`, () => `${r.int(1, 9)}.${r.int(0, 9)} km`, () => `${r.int(1, 9)}.${r.int(0, 9)}km`,
      () => `${r.int(1, 9)}.${r.int(10, 99)} km`, () => `${num()} mm`, () => `${num()} kms`, () => `${num()}  m`, () => `x${num()}m`,
      () => `${num()}.m`, () => `1.2.${r.int(1, 9)}km`, () => `${num()}km2`, () => `${num()} m.`])();
  };
  const time = () => {
    const t = allowed('time');
    if (t.length && r.chance(0.3)) return t[0].value;
    return pick([() => `${r.int(0, 23)}:${String(r.int(0, 59)).padStart(2, '0')}`, () => `${r.int(0, 9)}:${r.int(0, 9)}`,
      () => `${r.int(100, 999)}:45`, () => `12:${r.int(100, 999)}`, () => `a${r.int(10, 23)}:30`, () => `${r.int(10, 23)}:30h`,
      () => `${r.int(10, 23)}:30:15`])();
  };
  const day = () => {
    const d = r.chance(0.3) && allowed('day').length ? allowed('day')[0].value : pick(C.DAYS);
    return pick([d, d, d, d + 's', d.toLowerCase(), d.toUpperCase(), d + "'s", 'x' + d]);
  };
  const lang = () => {
    const l = r.chance(0.3) && allowed('language').length ? allowed('language')[0].value : pick(Object.values(C.LANGS));
    return pick([l, l, l, l + 'man', l + '-speaking', l.toLowerCase()]);
  };
  const brand = () => pick(vocab.brands);
  const city = () => pick(vocab.cities);
  const name = () => {
    const ns = facts.facts.filter((f) => f.type === 'poi').map((f) => f.name)
      .concat(facts.facts.filter((f) => f.type === 'place' || f.type === 'country').map((f) => f.value));
    return pick(ns);
  };
  const priv = () => (facts.private.length && r.chance(0.7) ? pick(facts.private) : pick(pick(all).private.concat([{ value: 'zz' }]))).value;
  const fragment = () => { const o = pick(all).ref; const a = r.int(0, o.length); return o.slice(a, a + r.int(0, 60)); };
  return { dist, time, day, lang, brand, city, name, priv, fragment };
}

const near = (r, set, s) => r.pick(set) + s + r.pick(set);

function perturb(kind, r, out, rec, vocab, all) {
  const m = makers(r, vocab, rec, all);
  const add = (s) => { const words = out.split(' '); const at = r.int(0, words.length); words.splice(at, 0, s); out = words.join(' '); };
  switch (kind) {
    case 'invented':
      for (let k = r.int(3, 7); k > 0; k--) {
        add(r.pick([m.dist, m.time, m.day, m.lang, () => near(r, ASCII_NEIGHBOURS, m.brand()), () => near(r, ASCII_NEIGHBOURS, m.city())])());
      }
      return out;
    case 'dropped':
      if (r.chance(0.1)) return '';
      for (const f of rec.facts) {
        if (!r.chance(0.5)) continue;
        const v = f.type === 'poi' ? (r.chance(0.5) ? f.name : f.distance) : f.value;
        out = out.split(v).join(r.chance(0.5) ? '' : v.toUpperCase());
      }
      // the request: its sentence gone, cut short, or in other case
      for (const a of rec.request.asks) {
        if (!out.includes(a)) continue;
        const k = r.int(0, 2);
        out = out.split(a).join(k === 0 ? '' : k === 1 ? a.slice(0, -2) : a.toUpperCase());
      }
      return r.chance(0.2) ? out.slice(0, r.int(0, out.length)) : out;
    case 'leaked':
      for (let k = r.int(1, 3); k > 0; k--) add(r.chance(0.5) ? m.priv() : near(r, ASCII_NEIGHBOURS, m.priv()) + m.name());
      return out;
    case 'cased': {
      const place = rec.facts.find((f) => f.type === 'place').value;
      return r.pick([(s) => s.toUpperCase(), (s) => s.toLowerCase(), (s) => s.replace(/\b\w/g, (c) => c.toUpperCase()),
        (s) => s.split(place).join(place.toUpperCase()), (s) => s.split(place).join(place.replace(/i/g, 'İ')),
        (s) => s.replace(/[a-z]/g, (c) => (r.chance(0.2) ? c.toUpperCase() : c)), (s) => s + ' ΟΔΟΣ Σ σς'])(out);
    }
    case 'unicode':
      add(r.pick(SYNTHETIC));
      for (let k = r.int(3, 7); k > 0; k--) {
        const s = r.pick([m.brand, m.city, m.name, m.day, m.lang, m.dist, m.time])();
        add(r.chance(0.15) ? near(r, Object.keys(INVALID), s) : near(r, NEIGHBOURS, s));
      }
      return out;
    case 'mixed': {
      const parts = [];
      for (let k = r.int(5, 25); k > 0; k--) {
        parts.push(r.pick([m.dist, m.time, m.day, m.lang, m.brand, m.city, m.name, m.priv, m.fragment, m.fragment])());
      }
      return parts.map((p, i) => (i ? r.pick(NEIGHBOURS.concat(ASCII_NEIGHBOURS, Object.keys(INVALID))) : '') + p).join('');
    }
  }
  throw new Error(kind);
}

// A prediction file's bytes: JSON lines, placeholders turned into invalid UTF-8.
function predBytes(outputs) {
  const lines = outputs.map((o) => (o === undefined ? '{}' : JSON.stringify({ output: o }))).join('\n') + '\n';
  const parts = lines.split(/(\\u0001[A-F])/); // as JSON.stringify escapes them
  const raw = (p) => INVALID[`\u0001${p.slice(6)}`];
  return Buffer.concat(parts.map((p) => (raw(p) ? Buffer.from(raw(p)) : Buffer.from(p, 'utf8'))));
}

// ---------------------------------------------------------------- main
function pickRecords(facts, refs, baseline) {
  const features = [
    (r) => r.private.some((p) => p.type === 'cell'),
    (r) => r.private.some((p) => p.type === 'recent_visit'),
    (r) => r.private.some((p) => p.type === 'pii'),
    (r) => r.private.some((p) => C.DAYS.some((d) => p.value.includes(d))),
    (r, i) => r.private.some((p) => baseline[i].includes(p.value)),
    (r) => r.facts.some((f) => f.type === 'weather'),
    (r) => r.facts.some((f) => f.value && /[^\x00-\x7f]/.test(f.value)),
    (r) => r.facts.some((f) => f.name && /[^\x00-\x7f]/.test(f.name)),
    (r) => r.facts.filter((f) => f.type === 'poi').length >= 5,
    (r) => !r.facts.some((f) => f.type === 'language'),
  ];
  const chosen = new Set();
  for (const ok of features) {
    let k = 0;
    facts.forEach((r, i) => { if (k < 3 && ok(r, i)) { if (!chosen.has(i)) chosen.add(i); k++; } });
  }
  for (let i = 0; chosen.size < N_RECORDS; i++) chosen.add(i);
  return [...chosen].sort((a, b) => a - b);
}

function main() {
  if (process.argv.includes('--c-tables')) return printTables();
  const dir = path.resolve(C.arg('--data', path.join(C.ROOT, 'build', 'data', 'pairs')));
  const out = path.resolve(C.arg('--out', path.join(C.ROOT, 'tests', 'testdata', 'pairs_score')));
  const facts = readJsonl(path.join(dir, 'test_facts.jsonl'));
  const refs = readJsonl(path.join(dir, 'test.jsonl')).map((p) => p.output);
  const base = readJsonl(path.join(dir, 'test_baseline.jsonl')).map((p) => p.output);
  const fullVocab = JSON.parse(fs.readFileSync(path.join(dir, 'vocab.json'), 'utf8'));
  const idx = pickRecords(facts, refs, base);
  const recs = idx.map((i) => facts[i]);
  const all = idx.map((i) => ({ ref: refs[i], private: facts[i].private }));

  const inRecords = (c) => recs.some((r, k) => all[k].ref.includes(c) || r.facts.some((f) => f.value === c));
  const cities = fullVocab.cities.filter((c, i) => /[^\x00-\x7f]/.test(c) || inRecords(c) || i % 10 === 0);
  const vocab = { brands: fullVocab.brands.concat(SYNTHETIC[0]), cities: cities.concat(SYNTHETIC) };

  const r = C.rng(C.hash32(SEED));
  const files = {
    'reference.jsonl': all.map((a) => a.ref),
    'baseline.jsonl': idx.map((i) => base[i]),
  };
  for (const kind of ['invented', 'dropped', 'leaked', 'cased', 'unicode', 'mixed']) {
    files[`${kind}.jsonl`] = recs.map((rec, k) => perturb(kind, r, all[k].ref, rec, vocab, all));
  }
  files['dropped.jsonl'][3] = undefined; // a line without "output" scores as ''

  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 'facts.jsonl'), idx.map((i) => JSON.stringify(facts[i])).join('\n') + '\n');
  fs.writeFileSync(path.join(out, 'vocab.json'), JSON.stringify(vocab) + '\n');
  const expected = [];
  for (const [name, outputs] of Object.entries(files)) {
    const file = path.join(out, name);
    fs.writeFileSync(file, predBytes(outputs));
    const preds = readJsonl(file); // as eval_pairs.js reads it
    const tot = counts(preds, recs, vocab);
    const per = recs.map((rec, k) => {
      const c = counts([preds[k]], [rec], vocab);
      return `[${[c.facts, c.stated, c.mentions, c.invented, c.leaks, c.requests, c.requests_stated].join(',')}]`;
    });
    const head = Object.entries(tot).map(([k, v]) => `"${k}": ${v}`).join(', ');
    expected.push(`  "${name}": {${head},\n    "per_record": [${per.join(',')}]}`);
    console.log(name, JSON.stringify(tot));
  }
  fs.writeFileSync(path.join(out, 'expected.json'), `{\n${expected.join(',\n')}\n}\n`);
}

main();
