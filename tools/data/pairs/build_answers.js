#!/usr/bin/env node
// Builds answer data for the cloud model: comprehensive prompt -> an on-topic, helpful answer
// built only from the prompt's facts (nearest options first, distances, walking times, the
// time of day, the stated preferences), in the Alpaca format.
//
//   node tools/data/pairs/build_answers.js [--places DIR] [--out DIR] [--train N] [--val N] [--test N]
//     --places build/data/places   --out build/data/answers
//
// Writes train.jsonl, val.jsonl, test.jsonl and stats.json. Cities are split exactly as in
// build_pairs.js (same seed), so a test city of one is a test city of the other. The prompts
// ask for English answers only (see tools/data/README.md). Same inputs -> same bytes; exits
// non-zero when a self-check fails.
'use strict';
const fs = require('fs');
const path = require('path');
const C = require('./common');

const SPLIT_SEED = 'netgpt-pairs-v1'; // the city split of build_pairs.js
const SEED = 'netgpt-answers-v1';
const MIN_POP = 20000;
const MAX_TOKENS = 320; // GPT-2 tokens of the Alpaca-wrapped record (LLaMA's tokenizer gives a similar count)

const esc = (x) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const wordIn = (text, w) => new RegExp(`(^|[^\\p{L}\\p{N}])${esc(w)}($|[^\\p{L}\\p{N}])`, 'u').test(text);
const walkMin = (m) => Math.max(1, Math.round(m / 80));
const dist = C.fmtDist;

function mobility(sc) {
  for (const p of ['car', 'bike', 'transit', 'foot']) if (sc.prefs.includes(p)) return p;
  return '';
}
function reach(p, sc, r) {
  const mob = mobility(sc);
  if (mob === 'car' || p.category === 'fuel') return r.pick([`${dist(p.dist)} away, a short drive`, `${dist(p.dist)} away by car`]);
  if (mob === 'bike') return `${dist(p.dist)} away, a few minutes by bike`;
  if (mob === 'transit' && p.dist >= 1500) return `${dist(p.dist)} away, easiest by bus or tram`;
  const w = walkMin(p.dist);
  return r.pick([`${dist(p.dist)} away, about ${w} minute${w > 1 ? 's' : ''} on foot`, `${dist(p.dist)} away (roughly ${w === 8 || w === 11 || w === 18 || (w >= 80 && w < 90) ? 'an' : 'a'} ${w}-minute walk)`, `just ${dist(p.dist)} away, around ${w} minute${w > 1 ? 's' : ''} walking`]);
}

function timeNote(sc, r) {
  const h = sc.hour, weekend = sc.day === 'Saturday' || sc.day === 'Sunday';
  if (h >= 22 || h < 6) return r.pick([`It is ${sc.time}, so many places may already be closed; check the opening hours before you go.`, `At ${sc.time} at night, opening hours matter: check that it is still open.`]);
  if (sc.type === 'food' && ((h >= 12 && h < 14) || (h >= 19 && h < 21))) return r.pick([`Around ${sc.time} is a busy time, so expect a short wait or book ahead.`, `${sc.time} is peak time for meals; booking ahead helps.`]);
  if (weekend && (sc.type === 'shopping' || sc.type === 'groceries' || sc.type === 'pharmacy' || sc.type === 'cash')) return `Some shops have shorter hours on ${sc.day}, so check before you go.`;
  if (h < 9) return r.pick([`At ${sc.time} some places are only just opening.`, `It is still early (${sc.time}), so check that it is open.`]);
  return r.chance(0.5) ? `At ${sc.time} on ${sc.day} most places should be open.` : '';
}

function prefNotes(sc, r) {
  const out = [];
  for (const p of sc.prefs) {
    const key = C.PREFS[p].key;
    if (['vegetarian', 'vegan', 'halal', 'gluten-free', 'pescatarian'].includes(key)) out.push(r.pick([`Ask for ${key} options when you order; most places can help.`, `Check the menu for ${key} dishes before you sit down.`]));
    else if (key.endsWith('budget')) out.push(key === 'low budget' ? r.pick(['On a low budget, the chains nearby are usually the cheaper choice.', 'To keep to a low budget, look for set menus or daily offers.']) : key === 'moderate budget' ? 'All of these fit a moderate budget.' : 'With a generous budget you can simply pick the one you like best.');
    else if (key === 'wheelchair') out.push(r.pick(['Call ahead to confirm step-free access for your wheelchair.', 'For wheelchair access, check for a step-free entrance before you go.']));
    else if (key === 'children') out.push(r.pick(['With children, the closest option saves the most effort.', 'Larger chains usually have space and facilities for children.']));
    else if (key === 'quiet') out.push('For somewhere quiet, avoid the busiest hours.');
    else if (key === 'wifi') out.push('Chains like these usually offer wifi; ask staff for the password.');
    else if (key === 'dog') out.push('Check whether your dog is allowed inside; many places allow dogs on a terrace.');
    else if (key === 'electric car') out.push('For an electric car, check the station has a charger that fits your plug.');
    else if (key === 'card') out.push('Paying by card is accepted almost everywhere in chains like these.');
    else if (key === 'outdoor seating') out.push('Ask for a table outside if you want outdoor seating.');
  }
  return out;
}

function typeNote(sc, r) {
  const city = sc.city.name;
  switch (sc.type) {
    case 'transport': {
      const dest = /airport/.test(sc.concise) ? 'the airport' : /station/.test(sc.concise) ? 'the train station' : /old town/.test(sc.concise) ? 'the old town' : /home/.test(sc.concise) ? 'home' : 'the city centre';
      const mob = mobility(sc);
      const base = mob === 'car' ? `Driving is the simplest way to ${dest}; allow extra time for parking.` : mob === 'bike' ? `Cycling to ${dest} is usually quick; use bike lanes where you can.` : mob === 'foot' ? `If ${dest} is close, walking is fine; otherwise take a taxi or public transport.` : `Public transport is the cheapest way to ${dest}; a taxi is faster but costs more.`;
      return [base, r.pick([`Check a local journey planner for ${city} for current times.`, `Look up the next departures in ${city} before you leave.`])];
    }
    case 'weather': return [r.pick([`Since it is ${sc.weather}, an indoor plan is the safest choice.`, `With the weather ${sc.weather}, stay somewhere indoors and comfortable.`])];
    case 'events': return [r.pick([`Check the local listings for ${city} for concerts, films or exhibitions on ${sc.day}.`, `Look at what is on in ${city} today: theatres, cinemas and live music are good bets.`])];
    case 'pharmacy': return [r.pick(['If it is urgent and the pharmacy is closed, look for the duty pharmacy or call a doctor.', 'Pharmacists can advise on which medicine suits you.'])];
    case 'hotel': return [r.pick(['Call or book online to make sure a room is available tonight.', 'Check availability before you go; rooms can fill up in the evening.'])];
    case 'fuel': return [r.pick(['Prices differ between stations, so compare them if you are not in a hurry.', 'Most stations also have a small shop for snacks and drinks.'])];
    case 'cash': return [r.pick(['Bank machines outside branches work around the clock.', 'Use a machine attached to a bank to avoid high fees.'])];
    default: return [];
  }
}

function answer(sc, r) {
  const parts = [];
  const pois = sc.pois.slice().sort((a, b) => a.dist - b.dist);
  parts.push(r.pick([`Here are some suggestions for ${sc.city.name}.`, `Happy to help in ${sc.city.name}.`, `Sure! In ${sc.city.name}, here is what I suggest.`, `Here is what I would do.`]));
  if (sc.type === 'transport' || sc.type === 'events') parts.push(...typeNote(sc, r));
  if (pois.length) {
    const best = pois[0];
    parts.push(r.pick([`The closest option is ${best.name}, ${reach(best, sc, r)}.`, `I would go to ${best.name}: it is ${reach(best, sc, r)}.`, `Your best bet is ${best.name}, ${reach(best, sc, r)}.`]));
    const rest = pois.slice(1);
    if (rest.length) {
      const list = C.joinList(rest.map((p) => `${p.name} (${dist(p.dist)})`), null);
      parts.push(rest.length === 1 ? r.pick([`${list} is a good alternative.`, `If that does not suit you, ${list} is also nearby.`]) : r.pick([`Good alternatives are ${list}.`, `If you want other options, try ${list}.`]));
    }
  }
  if (sc.type !== 'transport' && sc.type !== 'events') parts.push(...typeNote(sc, r));
  parts.push(...prefNotes(sc, r));
  const tn = timeNote(sc, r);
  if (tn) parts.push(tn);
  if (r.chance(0.4)) parts.push(r.pick(['Enjoy!', 'Have a good time!', 'I hope this helps.', 'Have a nice day!']));
  return parts.join(' ');
}

function main() {
  const t0 = Date.now();
  const placesDir = path.resolve(C.arg('--places', path.join(C.ROOT, 'build', 'data', 'places')));
  const out = path.resolve(C.arg('--out', path.join(C.ROOT, 'build', 'data', 'answers')));
  const sizes = { train: +C.arg('--train', 10000), val: +C.arg('--val', 500), test: +C.arg('--test', 500) };
  const places = C.loadPlaces(placesDir, MIN_POP);
  const usable = places.cities.filter((c) => Object.values(places.byCountry.get(c.country)).filter((l) => l.length).length >= 6);
  const bySplit = { train: [], val: [], test: [] };
  for (const c of usable) bySplit[C.splitOf(c.id, SPLIT_SEED)].push(c);
  const brandNames = [...new Set(places.brands.map((b) => b.name))];
  const violations = [];
  const stats = { builder: 'tools/data/pairs/build_answers.js', seed: SEED, city_split_seed: SPLIT_SEED, format: 'Alpaca JSONL {"instruction","input","output"}', max_tokens: MAX_TOKENS, splits: {} };
  const used = {};
  fs.mkdirSync(out, { recursive: true });
  for (const split of ['train', 'val', 'test']) {
    const r = C.rng(C.hash32(SEED, split));
    const rows = [], toks = [], byType = {}, ids = new Set();
    while (rows.length < sizes[split]) {
      const city = bySplit[split][Math.floor(r.next() * bySplit[split].length)];
      const sc = C.makeScenario(places, city, r);
      sc.language = r.chance(0.7) ? 'en' : ''; // English answers only
      sc.pii = []; // the cloud never sees the concise prompt's personal data
      const instruction = C.comprehensive(sc, r);
      const output = answer(sc, r);
      const n = C.nTokens(C.alpacaText(instruction, output));
      if (n > MAX_TOKENS) continue;
      // self-checks: the answer names only POIs of the prompt and recommends the nearest first
      const bad = [];
      let bare = output;
      for (const p of sc.pois) bare = bare.split(p.name).join(' ');
      bare = bare.split(sc.city.name).join(' ');
      for (const b of brandNames) if (b.length >= 4 && wordIn(bare, b) && !sc.pois.some((p) => p.name.includes(b))) bad.push('brand not in prompt: ' + b);
      if (sc.pois.length) {
        const nearest = sc.pois.reduce((a, b) => (b.dist < a.dist ? b : a));
        if (!output.includes(`${nearest.name}`) || output.indexOf(nearest.name) > output.indexOf(dist(nearest.dist))) bad.push('nearest POI not recommended first');
        for (const p of sc.pois) if (!output.includes(dist(p.dist))) bad.push('distance missing ' + dist(p.dist));
      }
      for (const m of output.match(/\d+(?:[.:]\d+)?/g) || []) {
        if (!instruction.includes(m) && !sc.pois.some((p) => String(walkMin(p.dist)) === m)) bad.push('number not in prompt: ' + m);
      }
      const noPlace = (t) => t.split(sc.place).join(' ').split(sc.city.name).join(' ');
      for (const p of C.privateOf(sc)) if (noPlace(output).includes(p.value) || noPlace(instruction).includes(p.value)) bad.push('private ' + p.value);
      if (bad.length) violations.push(`${split} #${rows.length}: ${bad.join('; ')} :: ${output}`);
      rows.push({ instruction, input: '', output });
      toks.push(n);
      byType[sc.type] = (byType[sc.type] || 0) + 1;
      ids.add(city.id);
    }
    used[split] = ids;
    C.writeJsonl(path.join(out, `${split}.jsonl`), rows);
    stats.splits[split] = { records: rows.length, cities_used: ids.size, by_type: byType, tokens: C.lengthStats(toks), bytes: fs.statSync(path.join(out, `${split}.jsonl`)).size };
  }
  for (const [a, b] of [['train', 'val'], ['train', 'test'], ['val', 'test']]) for (const id of used[a]) if (used[b].has(id)) violations.push(`city ${id} in ${a} and ${b}`);
  stats.violations = violations.length;
  fs.writeFileSync(path.join(out, 'stats.json'), JSON.stringify(stats, null, 1) + '\n');
  const s = stats.splits;
  console.error(`build_answers: train ${s.train.records}, val ${s.val.records}, test ${s.test.records}; tokens p50 ${s.train.tokens.p50} max ${s.train.tokens.max}; ${((Date.now() - t0) / 1000).toFixed(1)} s -> ${path.relative(process.cwd(), out) || '.'}`);
  if (violations.length) {
    for (const v of violations.slice(0, 15)) console.error('build_answers: CHECK FAILED: ' + v);
    console.error(`build_answers: ${violations.length} violations`);
    process.exit(1);
  }
}
main();
