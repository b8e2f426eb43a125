// Shared by build_pairs.js, build_answers.js and eval_pairs.js: seeded randomness, the places
// tables (build/data/places/{cities,brands}.tsv from tools/data/places/build_places.js), the
// scenario generator, the context block (byte-for-byte the format src/edge/complete.c
// edge_context_block writes), the comprehensive-prompt writer, the template baseline (mirrors
// edge_template_fill) and the fact checks.
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');

const ROOT = path.resolve(__dirname, '..', '..', '..');

// ---------------------------------------------------------------- randomness
function hash32(...parts) {
  return crypto.createHash('sha256').update(parts.join('\0')).digest().readUInt32BE(0);
}
// mulberry32: small, fast, deterministic
function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const r = {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)), // inclusive
    pick: (arr) => arr[Math.floor(next() * arr.length)],
    chance: (p) => next() < p,
    weighted: (items, w) => {
      let tot = 0;
      for (const it of items) tot += w(it);
      let x = next() * tot;
      for (const it of items) { x -= w(it); if (x < 0) return it; }
      return items[items.length - 1];
    },
    // a generator that continues from here exactly as this one will (same draws)
    clone: () => rng(a),
    shuffle: (arr) => {
      const a = arr.slice();
      for (let i = a.length - 1; i > 0; i--) { const j = Math.floor(next() * (i + 1)); [a[i], a[j]] = [a[j], a[i]]; }
      return a;
    },
  };
  return r;
}

// ---------------------------------------------------------------- places
function readTsv(file) {
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);
  const head = lines[0].split('\t');
  return lines.slice(1).map((l) => {
    const f = l.split('\t');
    const o = {};
    head.forEach((h, i) => { o[h] = f[i]; });
    return o;
  });
}

const regionNames = new Intl.DisplayNames(['en'], { type: 'region' });
function countryName(cc) {
  try { return regionNames.of(cc) || cc; } catch (e) { return cc; }
}

// brand "countries" field: "US,CA" | "*" | "*-CN,HK"
function soldIn(countries, cc) {
  if (countries === '*') return true;
  if (countries.startsWith('*-')) return !countries.slice(2).split(',').includes(cc);
  return countries.split(',').includes(cc);
}

function loadPlaces(dir, minPopulation) {
  const cf = path.join(dir, 'cities.tsv');
  const bf = path.join(dir, 'brands.tsv');
  if (!fs.existsSync(cf) || !fs.existsSync(bf)) {
    throw new Error(`${path.relative(process.cwd(), cf)} / brands.tsv missing: run \`node tools/data/places/build_places.js\` first`);
  }
  const brands = readTsv(bf).map((b) => ({ category: b.category, name: b.brand, weight: Number(b.weight) || 1, countries: b.countries }));
  const cities = [];
  for (const c of readTsv(cf)) {
    const pop = Number(c.population);
    if (!(pop >= minPopulation)) continue;
    cities.push({ id: Number(c.geonameid), name: c.name, ascii: c.asciiname, country: c.country, pop, tz: c.timezone });
  }
  cities.sort((a, b) => a.id - b.id);
  // brands by country and category
  const byCountry = new Map();
  const categories = [...new Set(brands.map((b) => b.category))];
  for (const cc of new Set(cities.map((c) => c.country))) {
    const m = {};
    for (const cat of categories) m[cat] = brands.filter((b) => b.category === cat && soldIn(b.countries, cc));
    byCountry.set(cc, m);
  }
  return { cities, brands, categories, byCountry, files: { cities: cf, brands: bf } };
}

// ---------------------------------------------------------------- vocabulary of the scenarios
const DAYS = ['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday'];
const LANGS = { en: 'English', fr: 'French', de: 'German', es: 'Spanish', it: 'Italian', pt: 'Portuguese', nl: 'Dutch', pl: 'Polish', ja: 'Japanese', ar: 'Arabic', tr: 'Turkish', sv: 'Swedish' };
const COUNTRY_LANG = { FR: 'fr', BE: 'fr', CH: 'de', DE: 'de', AT: 'de', ES: 'es', MX: 'es', AR: 'es', CO: 'es', CL: 'es', PE: 'es', IT: 'it', PT: 'pt', BR: 'pt', NL: 'nl', PL: 'pl', JP: 'ja', SA: 'ar', AE: 'ar', EG: 'ar', TR: 'tr', SE: 'sv' };

// How each store category is named in prose: [singular, plural]
const CAT_WORDS = {
  cafe: ['cafe', 'cafes'], restaurant: ['restaurant', 'restaurants'], fast_food: ['fast-food place', 'fast-food places'],
  supermarket: ['supermarket', 'supermarkets'], convenience: ['convenience store', 'convenience stores'],
  pharmacy: ['pharmacy', 'pharmacies'], fuel: ['petrol station', 'petrol stations'], hotel: ['hotel', 'hotels'],
  bank: ['bank', 'banks'], clothes: ['clothes shop', 'clothes shops'], electronics: ['electronics shop', 'electronics shops'],
};

// Preferences: ctx = text in the user line; key = the words every output that states it contains.
// first/third = phrasings in the first / third person ({} is not used: each contains key).
const PREFS = {
  vegetarian: { ctx: 'vegetarian', key: 'vegetarian', kinds: ['diet'], first: ['I am vegetarian', 'I eat vegetarian', 'I need vegetarian options'], third: ['the user is vegetarian', 'they need vegetarian options'] },
  vegan: { ctx: 'vegan', key: 'vegan', kinds: ['diet'], first: ['I am vegan', 'I need vegan options', 'I only eat vegan food'], third: ['the user is vegan', 'they need vegan options'] },
  halal: { ctx: 'eats halal', key: 'halal', kinds: ['diet'], first: ['I eat halal', 'I need halal food'], third: ['the user eats halal', 'they need halal food'] },
  glutenfree: { ctx: 'gluten-free diet', key: 'gluten-free', kinds: ['diet'], first: ['I need gluten-free food', 'I follow a gluten-free diet'], third: ['the user needs gluten-free food', 'they follow a gluten-free diet'] },
  pescatarian: { ctx: 'pescatarian', key: 'pescatarian', kinds: ['diet'], first: ['I am pescatarian', 'I eat pescatarian'], third: ['the user is pescatarian'] },
  lowbudget: { ctx: 'low budget', key: 'low budget', kinds: ['budget'], first: ['I am on a low budget', 'I have a low budget', 'I am on a low budget, so cheaper is better'], third: ['the user is on a low budget', 'they have a low budget'] },
  midbudget: { ctx: 'moderate budget', key: 'moderate budget', kinds: ['budget'], first: ['I have a moderate budget', 'I am on a moderate budget'], third: ['the user has a moderate budget', 'they are on a moderate budget'] },
  highbudget: { ctx: 'generous budget', key: 'generous budget', kinds: ['budget'], first: ['I have a generous budget', 'I am happy with a generous budget'], third: ['the user has a generous budget'] },
  foot: { ctx: 'travels on foot', key: 'on foot', kinds: ['mobility'], first: ['I am on foot', 'I am travelling on foot', 'I will go on foot'], third: ['the user is on foot', 'they are travelling on foot'] },
  car: { ctx: 'travels by car', key: 'by car', kinds: ['mobility'], first: ['I am travelling by car', 'I am getting around by car'], third: ['the user is travelling by car', 'they get around by car'] },
  bike: { ctx: 'travels by bike', key: 'by bike', kinds: ['mobility'], first: ['I am travelling by bike', 'I am getting around by bike'], third: ['the user is travelling by bike', 'they get around by bike'] },
  transit: { ctx: 'uses public transport', key: 'public transport', kinds: ['mobility'], first: ['I use public transport', 'I am relying on public transport'], third: ['the user relies on public transport', 'they use public transport'] },
  wheelchair: { ctx: 'uses a wheelchair', key: 'wheelchair', kinds: ['access'], first: ['I use a wheelchair, so step-free access matters', 'I need wheelchair access'], third: ['the user uses a wheelchair and needs step-free access', 'they need wheelchair access'] },
  kids: { ctx: 'with children', key: 'children', kinds: ['company'], first: ['I have my children with me', 'I am out with children'], third: ['the user has children with them', 'they are out with children'] },
  quiet: { ctx: 'likes quiet places', key: 'quiet', kinds: ['taste'], first: ['I like quiet places', 'I prefer somewhere quiet'], third: ['the user likes quiet places', 'they prefer somewhere quiet'] },
  wifi: { ctx: 'needs wifi', key: 'wifi', kinds: ['taste'], first: ['I need wifi', 'I need somewhere with wifi'], third: ['the user needs wifi', 'they need somewhere with wifi'] },
  dog: { ctx: 'has a dog', key: 'dog', kinds: ['company'], first: ['I have a dog with me', 'my dog is with me'], third: ['the user has a dog with them'] },
  electric: { ctx: 'drives an electric car', key: 'electric car', kinds: ['vehicle'], first: ['I drive an electric car', 'my car is an electric car'], third: ['the user drives an electric car'] },
  card: { ctx: 'pays by card', key: 'card', kinds: ['payment'], first: ['I pay by card', 'I would like to pay by card'], third: ['the user pays by card'] },
  outdoor: { ctx: 'likes outdoor seating', key: 'outdoor seating', kinds: ['taste'], first: ['I like outdoor seating', 'outdoor seating would be nice'], third: ['the user likes outdoor seating'] },
};
const PREF_IDS = Object.keys(PREFS);

// Request types: concise prompts (as users type them), categories asked of the store, which
// preferences the profile may carry, and what the comprehensive prompt asks the cloud.
// A concise prompt may contain {w} (weather words), filled from WEATHER.
const WEATHER = ['raining', 'pouring', 'snowing', 'really hot', 'freezing cold', 'windy', 'sunny', 'foggy', 'stormy', 'drizzling'];
const REQUESTS = {
  food: {
    weight: 16, cats: [['restaurant'], ['fast_food'], ['restaurant', 'fast_food']], prefs: ['vegetarian', 'vegan', 'halal', 'glutenfree', 'pescatarian', 'lowbudget', 'midbudget', 'highbudget', 'foot', 'kids', 'quiet', 'wheelchair', 'outdoor', 'card'],
    concise: ['find me somewhere to eat', 'where can I eat?', 'hungry', 'food nearby?', 'im hungry, ideas?', 'somewhere for dinner', 'lunch spot near me', 'where should I eat', 'good food around here?', 'quick bite?', 'recommend a restaurant', 'need food', 'any place to grab a meal?', 'where to eat tonight', 'food pls', 'cheap eats nearby', 'what can I eat near here', 'I want to eat something', 'restaurant?', 'dinner ideas near me'],
    ask: ['Please recommend where I should eat', 'Which of these places would you suggest for a meal', 'Can you suggest a good place to eat', 'Please help me choose where to eat', 'Where would you recommend I go for food', 'Suggest a place for a meal and say why it fits'],
    ask3: ['They want a recommendation for where to eat', 'They are asking where to eat', 'Recommend a place for them to eat', 'Suggest where they should go for a meal'],
  },
  coffee: {
    weight: 12, cats: [['cafe']], prefs: ['vegan', 'lowbudget', 'midbudget', 'foot', 'quiet', 'wifi', 'outdoor', 'dog', 'card', 'kids'],
    concise: ['coffee?', 'need coffee', 'where can I get a coffee', 'cafe nearby', 'coffee near me', 'somewhere for a coffee', 'I need caffeine', 'good cafe around?', 'coffee pls', 'place to sit with a coffee', 'coffee and a snack?', 'where to grab a latte', 'a cafe to work from?', 'tea or coffee nearby?'],
    ask: ['Please recommend a cafe', 'Which cafe would you suggest', 'Where should I go for a coffee', 'Can you suggest the best place for a coffee', 'Please help me pick a cafe'],
    ask3: ['They want a cafe recommendation', 'They are looking for a coffee', 'Suggest a cafe for them'],
  },
  transport: {
    weight: 8, cats: [[], ['fuel']], prefs: ['foot', 'car', 'bike', 'transit', 'wheelchair', 'kids', 'lowbudget', 'electric'],
    concise: ['how do I get to the city centre', 'best way to the airport?', 'how do I get to the train station', 'how to get around here', 'need to get downtown', 'fastest way to the centre?', 'how do I get home from here', 'getting to the station?', 'transport options?', 'how do I get to the old town', 'is it far to the centre?', 'taxi or bus?'],
    ask: ['Please tell me the best way to get there', 'What is the best way to get there', 'Please suggest how I should travel', 'Can you recommend a route and a way to travel', 'Please compare my options for getting there'],
    ask3: ['They need advice on the best way to get there', 'Suggest how they should travel', 'Recommend a route and means of transport for them'],
  },
  weather: {
    weight: 9, cats: [['cafe'], ['restaurant'], ['clothes'], ['cafe', 'restaurant'], ['electronics'], ['cafe', 'clothes']], prefs: ['foot', 'kids', 'lowbudget', 'midbudget', 'quiet', 'wheelchair', 'dog', 'transit', 'car'],
    concise: ["it's {w}, what can I do?", 'what to do, it is {w}', "it's {w} outside, ideas?", 'plans? its {w}', "it's {w}, where can I go", 'anything to do while it is {w}?', 'weather is bad ({w}), suggestions?', "it's {w} - indoor ideas?"],
    ask: ['Please suggest what I could do given the weather', 'What would you suggest I do in this weather', 'Can you suggest a plan that suits the weather', 'Please recommend something to do that fits the weather'],
    ask3: ['They want a plan that suits the weather', 'Suggest something for them to do in this weather'],
  },
  events: {
    weight: 7, cats: [['restaurant'], ['cafe'], ['restaurant', 'cafe'], ['fast_food']], prefs: ['kids', 'lowbudget', 'midbudget', 'highbudget', 'quiet', 'wheelchair', 'foot', 'transit'],
    concise: ["what's on tonight?", 'anything happening nearby?', 'things to do around here', 'events today?', 'what can I do this evening', 'bored, what is going on?', 'any concerts or shows?', 'what to do here', 'fun things nearby?', 'is there anything on this weekend?'],
    ask: ['Please suggest events or things to do around here', 'What events or activities would you recommend', 'Can you tell me what is worth doing nearby', 'Please recommend something to do, with a place to eat or drink before or after'],
    ask3: ['They want to know about events and things to do', 'Suggest activities for them, with a place to eat or drink before or after'],
  },
  shopping: {
    weight: 9, cats: [['clothes'], ['electronics'], ['clothes', 'electronics'], ['supermarket', 'clothes']], prefs: ['lowbudget', 'midbudget', 'highbudget', 'foot', 'car', 'kids', 'card', 'wheelchair'],
    concise: ['where can I shop', 'shops nearby?', 'need new clothes', 'where to buy a phone charger', 'shopping near me', 'need a jacket', 'where can I buy headphones', 'any good shops around?', 'I want to go shopping', 'buy a gift nearby?'],
    ask: ['Please recommend where I should shop', 'Which shop would you suggest', 'Where should I go to buy what I need', 'Can you suggest the best shop for this', 'Please help me choose a shop'],
    ask3: ['They want a shop recommendation', 'Suggest where they should shop'],
  },
  groceries: {
    weight: 8, cats: [['supermarket'], ['convenience'], ['supermarket', 'convenience']], prefs: ['vegetarian', 'vegan', 'halal', 'glutenfree', 'lowbudget', 'midbudget', 'foot', 'car', 'kids', 'card'],
    concise: ['groceries?', 'where can I buy food', 'supermarket nearby', 'need some groceries', 'where to buy snacks', 'shop for water and bread?', 'need milk', 'is there a supermarket near me', 'grocery store?', 'buy food for tonight'],
    ask: ['Please recommend where I should buy groceries', 'Which store would you suggest for groceries', 'Where should I go to buy food', 'Can you suggest the best place to shop for groceries'],
    ask3: ['They want to buy groceries', 'Suggest a store for their groceries'],
  },
  hotel: {
    weight: 8, cats: [['hotel']], prefs: ['lowbudget', 'midbudget', 'highbudget', 'quiet', 'wheelchair', 'kids', 'dog', 'car', 'wifi', 'card'],
    concise: ['need a hotel', 'where can I sleep tonight', 'hotel near me?', 'find me a room', 'place to stay?', 'any hotels around', 'cheap hotel nearby', 'somewhere to stay tonight', 'book a hotel', 'accommodation?'],
    ask: ['Please recommend a hotel for tonight', 'Which hotel would you suggest', 'Where should I stay tonight', 'Can you suggest the best hotel for me', 'Please help me choose a hotel'],
    ask3: ['They need a hotel for tonight', 'Suggest a hotel for them'],
  },
  pharmacy: {
    weight: 7, cats: [['pharmacy']], prefs: ['foot', 'car', 'wheelchair', 'kids', 'transit', 'card'],
    concise: ['pharmacy?', 'need a pharmacy', 'where can I buy medicine', 'chemist nearby', 'headache, need painkillers', 'pharmacy open now?', 'where to get plasters', 'need allergy tablets', 'drugstore near me', 'I feel sick, pharmacy?'],
    ask: ['Please tell me which pharmacy to go to', 'Which pharmacy would you recommend', 'Where is the best pharmacy to go to now', 'Can you suggest a pharmacy that is likely to be open'],
    ask3: ['They need a pharmacy', 'Suggest a pharmacy for them'],
  },
  fuel: {
    weight: 6, cats: [['fuel']], prefs: ['car', 'electric', 'lowbudget', 'card', 'kids'],
    concise: ['need fuel', 'petrol station?', 'gas station near me', 'where can I fill up', 'low on fuel', 'where to refuel', 'fuel nearby?', 'need to charge my car', 'diesel?', 'cheapest petrol around?'],
    ask: ['Please recommend where I should refuel', 'Which station would you suggest', 'Where should I stop for fuel', 'Can you suggest the best station for me'],
    ask3: ['They need to refuel', 'Suggest a station for them'],
  },
  cash: {
    weight: 5, cats: [['bank']], prefs: ['foot', 'card', 'car', 'wheelchair'],
    concise: ['need cash', 'atm nearby?', 'where can I withdraw money', 'bank near me', 'cash machine?', 'where to change money', 'I need a bank', 'withdraw cash?'],
    ask: ['Please tell me where I can get cash', 'Which bank would you suggest', 'Where should I go to withdraw money', 'Can you suggest the nearest place to get cash'],
    ask3: ['They need to get cash', 'Suggest where they can withdraw money'],
  },
};
const REQUEST_IDS = Object.keys(REQUESTS);

// ---------------------------------------------------------------- formatting shared with C
// edge_context_block: "%d m" below 1000, "%.1f km" from 1000 (distances avoid .x5 ties)
function fmtDist(m) {
  return m < 1000 ? `${m} m` : `${(m / 1000).toFixed(1)} km`;
}
function hourPart(h) {
  if (h < 5) return 'night';
  if (h < 11) return 'morning';
  if (h < 14) return 'lunchtime';
  if (h < 18) return 'afternoon';
  if (h < 22) return 'evening';
  return 'night';
}
function meal(h) {
  if (h >= 5 && h < 11) return 'breakfast';
  if (h >= 11 && h < 15) return 'lunch';
  if (h >= 18 && h < 22) return 'dinner';
  return 'a meal';
}

// ---------------------------------------------------------------- scenarios
const PII_FIRST = ['Anna', 'Ben', 'Chloe', 'David', 'Elena', 'Farid', 'Grace', 'Hugo', 'Ines', 'Jonas', 'Keiko', 'Liam', 'Maria', 'Noah', 'Olga', 'Pedro', 'Rania', 'Sven', 'Tomas', 'Yuki'];

// One scenario: everything the edge knows plus the concise prompt. No outputs here.
function makeScenario(places, city, r) {
  const countryBrands = places.byCountry.get(city.country);
  let type, cats;
  for (let tries = 0; ; tries++) {
    type = r.weighted(REQUEST_IDS, (t) => REQUESTS[t].weight);
    cats = r.pick(REQUESTS[type].cats).filter((c) => countryBrands[c] && countryBrands[c].length);
    if (cats.length || (type === 'transport') || tries > 20) break;
  }
  const req = REQUESTS[type];
  // POIs: per category 1-3 (weighted by OSM weight like the store), nearest first
  const pois = [];
  const maxTotal = cats.length > 1 ? 4 : 3;
  for (const cat of cats) {
    const avail = countryBrands[cat];
    const k = Math.min(r.weighted([1, 2, 3], (n) => [2, 5, 4][n - 1]), maxTotal - pois.length - (cats.length - 1 - cats.indexOf(cat)));
    const used = new Set();
    for (let i = 0; i < Math.max(1, k); i++) {
      let b = r.weighted(avail, (x) => Math.sqrt(x.weight));
      if (used.has(b.name) && !r.chance(0.15)) b = r.weighted(avail, (x) => Math.sqrt(x.weight)); // rare duplicate brands, as the store makes
      used.add(b.name);
      const far = cat === 'fuel' || cat === 'hotel' ? 5200 : 3400;
      let d = r.chance(0.6) ? r.int(25, 999) : r.int(1000, far);
      if (d >= 1000 && d % 100 === 50) d += 1;
      pois.push({ category: cat, name: b.name, dist: d });
    }
  }
  // group by category in the order of first appearance, nearest first within (store order)
  const order = [...new Set(pois.map((p) => p.category))];
  pois.sort((a, b) => order.indexOf(a.category) - order.indexOf(b.category) || a.dist - b.dist);
  // distinct distance strings (so a name+distance fact is unambiguous)
  const seen = new Set();
  for (const p of pois) { while (seen.has(fmtDist(p.dist))) { p.dist += p.dist < 1000 ? 7 : 100; } seen.add(fmtDist(p.dist)); }

  const day = r.pick(DAYS);
  const hour = r.weighted([...Array(24).keys()], (h) => (h < 6 ? 0.3 : h < 8 ? 1 : 2));
  const minute = r.int(0, 59);
  const time = `${String(hour).padStart(2, '0')}:${String(minute).padStart(2, '0')}`;

  // user profile: 85% known
  let prefs = [], language = '', recent = [];
  if (r.chance(0.85)) {
    const n = r.weighted([0, 1, 2, 3], (x) => [2, 4, 3, 1][x]);
    const kinds = new Set();
    for (const pid of r.shuffle(req.prefs)) {
      if (prefs.length >= n) break;
      const kind = PREFS[pid].kinds[0];
      if (kinds.has(kind)) continue;
      kinds.add(kind); prefs.push(pid);
    }
    const local = COUNTRY_LANG[city.country];
    language = r.chance(0.5) ? 'en' : r.chance(0.35) && local ? local : r.pick(Object.keys(LANGS));
    if (r.chance(0.35)) {
      const exclude = new Set(pois.map((p) => p.name));
      const allCats = Object.keys(countryBrands).filter((c) => countryBrands[c].length);
      const nr = r.chance(0.75) ? 1 : 2;
      for (let i = 0; i < nr; i++) {
        const cat = r.pick(allCats);
        const clash = (b) => [...exclude].some((n) => n.includes(b.name) || b.name.includes(n));
        const cand = countryBrands[cat].filter((b) => !clash(b));
        if (!cand.length) continue;
        const b = r.pick(cand);
        exclude.add(b.name);
        recent.push({ category: cat, name: b.name, when: r.pick(['yesterday', 'this morning', '2 days ago', 'last week', '3 days ago', 'last night']) });
      }
    }
  }
  const cell = r.chance(0.6) ? `${city.country}-${(city.id % 9000) + 1000}-${r.int(1, 64)}` : '';

  // the concise prompt, sometimes with personal data the edge must not pass on
  let w = '';
  let concise = r.pick(req.concise);
  if (concise.includes('{w}')) { w = r.pick(WEATHER); concise = concise.replace('{w}', w); }
  if (r.chance(0.3)) concise = concise.toLowerCase();
  if (r.chance(0.15)) concise = concise.replace(/[?.!]$/, '');
  const pii = [];
  if (r.chance(0.08)) {
    const kind = r.pick(['name', 'coords', 'phone', 'email']);
    if (kind === 'name') { const nm = r.pick(PII_FIRST); pii.push(nm); concise = r.chance(0.5) ? `hi, ${nm} here. ${concise}` : `${concise} - ${nm}`; }
    if (kind === 'coords') {
      const lat = (r.next() * 120 - 50).toFixed(5), lon = (r.next() * 340 - 170).toFixed(5);
      pii.push(lat, lon); concise = `${concise} (I'm at ${lat}, ${lon})`;
    }
    if (kind === 'phone') { const ph = `+${r.int(1, 49)} ${r.int(100, 999)} ${r.int(100, 999)} ${r.int(1000, 9999)}`; pii.push(ph); concise = `${concise}, call me on ${ph}`; }
    if (kind === 'email') { const em = `${r.pick(PII_FIRST).toLowerCase()}${r.int(1, 99)}@example.com`; pii.push(em); concise = `${concise} (reply to ${em})`; }
  }

  return {
    type, city: { id: city.id, name: city.name, country: city.country, countryName: countryName(city.country) },
    place: `${city.name}, ${countryName(city.country)}`, cell, day, hour, time, pois, prefs, language, recent, concise, weather: w, pii,
  };
}

// ---------------------------------------------------------------- the context block (C format)
function prefsString(sc) {
  return sc.prefs.map((p) => PREFS[p].ctx).join(', ');
}
function contextBlock(sc) {
  let s = `[context]\nplace: ${sc.place}`;
  if (sc.cell) s += ` (cell ${sc.cell})`;
  s += `\ntime: ${sc.day} ${sc.time} local\n`;
  const cats = [...new Set(sc.pois.map((p) => p.category))];
  for (const c of cats) s += `nearby ${c}: ` + sc.pois.filter((p) => p.category === c).map((p) => `${p.name} ${fmtDist(p.dist)}`).join(', ') + '\n';
  const ps = prefsString(sc);
  if (ps || sc.language || sc.recent.length) {
    s += 'user:';
    let sep = ' ';
    if (ps) { s += sep + ps; sep = '; '; }
    if (sc.language) { s += `${sep}language ${sc.language}`; sep = '; '; }
    sc.recent.forEach((v, i) => { s += `${i ? ', ' : sep}${i ? '' : 'recent: '}${v.name} (${v.category}) ${v.when}`; });
    s += '\n';
  }
  s += `[request]\n${sc.concise}`;
  return s;
}

// Parse a context block back (what an evaluator or the baseline sees: no hidden state).
function parseContext(block) {
  const out = { place: '', cell: '', time: '', pois: [], prefs: '', language: '', recent: [], concise: '' };
  const [ctx, req] = block.split('\n[request]\n');
  out.concise = req || '';
  for (const line of ctx.split('\n')) {
    let m;
    if ((m = /^place: (.*?)(?: \(cell ([^)]*)\))?$/.exec(line))) { out.place = m[1]; out.cell = m[2] || ''; }
    else if ((m = /^time: (.*) local$/.exec(line))) out.time = m[1];
    else if ((m = /^nearby ([a-z_]+): (.*)$/.exec(line))) {
      for (const it of m[2].split(', ')) {
        const mm = /^(.*) (\d+ m|\d+\.\d km)$/.exec(it);
        if (mm) out.pois.push({ category: m[1], name: mm[1], distance: mm[2] });
      }
    } else if (line.startsWith('user: ')) {
      for (const part of line.slice(6).split('; ')) {
        if (part.startsWith('language ')) out.language = part.slice(9);
        else if (part.startsWith('recent: ')) {
          for (const v of part.slice(8).split(', ')) { const mm = /^(.*) \(([a-z_]+)\) (.*)$/.exec(v); if (mm) out.recent.push({ name: mm[1], category: mm[2], when: mm[3] }); }
        } else out.prefs = part;
      }
    }
  }
  return out;
}

// edge_template_fill (src/edge/complete.c), from the parsed context
function templateFill(block) {
  const c = parseContext(block);
  let s = `${c.concise}. I am in ${c.place} and it is ${c.time} local time.`;
  const cats = [...new Set(c.pois.map((p) => p.category))];
  for (const cat of cats) {
    s += ` Nearby ${cat} options:`;
    c.pois.filter((p) => p.category === cat).forEach((p, k) => { s += `${k ? ',' : ''} ${p.name} (${p.distance})`; });
    s += '.';
  }
  if (c.prefs) s += ` My preferences: ${c.prefs}.`;
  return s;
}

// ---------------------------------------------------------------- facts
// What a comprehensive prompt must state (and may state nothing beyond), and what it must not.
function factsOf(sc) {
  const f = [
    { type: 'place', value: sc.city.name },
    { type: 'country', value: sc.city.countryName },
    { type: 'day', value: sc.day },
    { type: 'time', value: sc.time },
  ];
  for (const p of sc.pois) f.push({ type: 'poi', category: p.category, name: p.name, distance: fmtDist(p.dist) });
  for (const p of sc.prefs) f.push({ type: 'preference', value: PREFS[p].key });
  if (sc.language) f.push({ type: 'language', value: LANGS[sc.language] });
  if (sc.weather) f.push({ type: 'weather', value: sc.weather });
  return f;
}
// The sentences that state the request (any of them, ignoring case, or the concise prompt as
// typed): the asks of its type in either person, the meal asks of a food request.
function requestOf(sc) {
  const req = REQUESTS[sc.type];
  const asks = [...req.ask, ...req.ask3];
  if (sc.type === 'food') {
    const m = meal(sc.hour);
    asks.push(`I am looking for a place for ${m}`, `Please recommend a place for ${m}`, `They want a place for ${m}`);
  }
  return { concise: sc.concise, asks };
}
function privateOf(sc) {
  const p = [];
  if (sc.cell) p.push({ type: 'cell', value: sc.cell });
  for (const v of sc.recent) p.push({ type: 'recent_visit', value: v.name });
  for (const x of sc.pii) p.push({ type: 'pii', value: x });
  return p;
}

// ---------------------------------------------------------------- the comprehensive prompt
const cap = (s) => s.charAt(0).toUpperCase() + s.slice(1);
function joinList(items, r) {
  if (items.length === 1) return items[0];
  const and = r && r.chance(0.2) ? ' or ' : ' and ';
  return items.slice(0, -1).join(', ') + and + items[items.length - 1];
}
function poiPhrase(p, style) {
  const d = p.distText || fmtDist(p.dist);
  switch (style) {
    case 0: return `${p.name} (${d})`;
    case 1: return `${p.name} at ${d}`;
    case 2: return `${p.name}, ${d} away`;
    default: return `${p.name} (${d} away)`;
  }
}
function poiSentences(sc, r, third) {
  const cats = [...new Set(sc.pois.map((p) => p.category))];
  const out = [];
  const style = r.int(0, 3);
  for (const cat of cats) {
    const ps = sc.pois.filter((p) => p.category === cat);
    const [sg, pl] = CAT_WORDS[cat] || [cat, cat + 's'];
    const list = joinList(ps.map((p) => poiPhrase(p, style)), null);
    const me = third ? 'them' : 'me';
    if (ps.length === 1) {
      out.push(r.pick([
        `The nearest ${sg} is ${list}.`,
        `There is a ${sg} nearby: ${list}.`,
        `Close to ${me} there is ${list}, a ${sg}.`,
        `The ${sg} nearby is ${list}.`,
      ]));
    } else {
      out.push(r.pick([
        `Nearby ${pl}: ${list}.`,
        `The nearest ${pl} are ${list}.`,
        `${cap(pl)} close to ${me} include ${list}.`,
        `Options nearby are ${list}.`,
        `Within reach there are these ${pl}: ${list}.`,
        `The ${pl} around ${me} are ${list}.`,
      ]));
    }
  }
  return out;
}
function prefSentence(sc, r, third) {
  if (!sc.prefs.length) return '';
  if (sc.prefsListed) {
    // the user line's own words ({prefs} in referenced form): the pairs state them so
    const ps = sc.prefsText || prefsString(sc);
    return third ? r.pick([`The user's preferences: ${ps}.`, `User profile: ${ps}.`])
      : r.pick([`My preferences: ${ps}.`, `About me: ${ps}.`, `Please keep in mind my preferences: ${ps}.`]);
  }
  const parts = sc.prefs.map((p) => r.pick(third ? PREFS[p].third : PREFS[p].first));
  if (third) return cap(joinList(parts, null)) + '.';
  return r.pick([
    `${cap(joinList(parts, null))}.`,
    `Please keep in mind: ${joinList(parts, null)}.`,
    `Note that ${joinList(parts, null)}.`,
  ]);
}
function langSentence(sc, r, third) {
  if (!sc.language) return '';
  const L = sc.languageName || LANGS[sc.language];
  return third
    ? r.pick([`Answer in ${L}.`, `Reply in ${L}.`, `Their language is ${L}, so answer in ${L}.`])
    : r.pick([`Please answer in ${L}.`, `Reply in ${L}, please.`, `Please respond in ${L}.`, `Answer in ${L}.`]);
}
function placeTimeSentence(sc, r, third) {
  const { place, day, time } = sc;
  const part = hourPart(sc.hour);
  const pt = r.chance(0.5) ? `${day} ${part}` : day;
  if (third) {
    return r.pick([
      `A user in ${place} is asking on ${pt} at ${time} local time.`,
      `The user is in ${place}; it is ${time} on ${pt} there.`,
      `Someone in ${place} asks at ${time} local time on ${pt}.`,
      `Location: ${place}. Local time: ${day} ${time}.`,
    ]);
  }
  return r.pick([
    `I am in ${place} and it is ${time} on ${pt}.`,
    `I'm in ${place}, it's ${day} and the local time is ${time}.`,
    `It is ${time} on ${pt} and I am in ${place}.`,
    `Right now I am in ${place}; local time is ${time} on ${pt}.`,
    `I'm currently in ${place}. It's ${time} local time on ${pt}.`,
    `Here in ${place} it is ${day}, ${time}.`,
    `I am in ${place} at ${time} on ${pt}.`,
    `Local time in ${place}, where I am, is ${time} on ${pt}.`,
  ]);
}
function requestSentence(sc, r, third) {
  const req = REQUESTS[sc.type];
  let ask = r.pick(third ? req.ask3 : req.ask);
  if (sc.type === 'food' && r.chance(0.5)) {
    const m = meal(sc.hour);
    ask = third ? `They want a place for ${m}` : r.pick([`I am looking for a place for ${m}`, `Please recommend a place for ${m}`]);
  }
  if (sc.type === 'transport') {
    const dest = /airport/.test(sc.concise) ? 'the airport' : /station/.test(sc.concise) ? 'the train station' : /old town/.test(sc.concise) ? 'the old town' : /home/.test(sc.concise) ? 'home' : 'the city centre';
    ask = third ? `They need to get to ${dest}. ${ask}` : `I need to get to ${dest}. ${ask}`;
  }
  if (sc.type === 'weather') {
    ask = (third ? `It is ${sc.weather} where they are. ` : r.pick([`It is ${sc.weather} here. `, `The weather: it is ${sc.weather}. `, `It's ${sc.weather} outside. `])) + ask;
  }
  const q = /(Which|What|Where|Can you)/.test(ask.split('. ').pop()) ? '?' : '.';
  return ask + q;
}
function comprehensive(sc, r) {
  const third = r.chance(0.25);
  const head = placeTimeSentence(sc, r, third);
  const ask = requestSentence(sc, r, third);
  const pois = poiSentences(sc, r, third);
  const pref = prefSentence(sc, r, third);
  const lang = langSentence(sc, r, third);
  let parts;
  const order = r.int(0, 3);
  if (sc.ownRequest) {
    // the request in the user's own words ({request} in referenced form; the cloud reads the
    // intent from them, a small model cannot be relied on to paraphrase it), or paraphrased
    // when they hold personal data, in the first two sentences
    const own = sc.requestText || sc.concise;
    const said = sc.pii.length ? ask : r.pick(third
      ? [`The user's request: "${own}".`, `They ask: "${own}".`]
      : [`My request: "${own}".`, `Request: "${own}".`, `In my words: "${own}".`]);
    const lead = order & 1 ? [said, head] : [head, said];
    parts = order & 2 ? [...lead, pref, ...pois, lang] : [...lead, ...pois, pref, lang];
  } else if (order === 0) parts = [head, ask, ...pois, pref, lang];
  else if (order === 1) parts = [head, ...pois, pref, ask, lang];
  else if (order === 2) parts = [ask, head, ...pois, pref, lang];
  else parts = [head, pref, ...pois, ask, lang];
  if (!third && r.chance(0.25)) parts.push(r.pick(['Keep the answer short.', 'Please be brief.', 'Thanks!', 'A short list is enough.']));
  return parts.filter(Boolean).join(' ');
}

// ---------------------------------------------------------------- references
// The completion models are trained to write references to the context instead of copying its
// values: {place} {day} {time} {language} {prefs} {request} {poiK} {distK} (K = the K-th point
// of interest of the context block, 1-based, in block order; {prefs} the preferences of the user
// line as written there; {request} the concise prompt). The edge fills them from the block it wrote
// (edge_fill_refs in src/edge/complete.c; fillRefs here is the same rule). A scenario whose values are
// the references: comprehensive() on it with a clone of the generator writes the referenced
// form of the very prompt comprehensive() writes on the scenario itself.
function refsScenario(sc) {
  return {
    ...sc, place: '{place}', day: '{day}', time: '{time}', languageName: sc.language ? '{language}' : '',
    prefsText: sc.prefs.length ? '{prefs}' : '', requestText: '{request}',
    pois: sc.pois.map((p, i) => ({ ...p, name: `{poi${i + 1}}`, distText: `{dist${i + 1}}` })),
  };
}
// text with its references replaced by the values of the context block; a reference the block
// has no value for stays as written (and is counted in unresolved)
function fillRefs(text, block, counts) {
  const c = parseContext(block);
  const sp = c.time.indexOf(' ');
  const v = new Map([['place', c.place], ['day', c.time.slice(0, sp)], ['time', c.time.slice(sp + 1)],
    ['language', c.language ? LANGS[c.language] || c.language : ''], ['prefs', c.prefs], ['request', c.concise]]);
  c.pois.forEach((p, i) => { v.set(`poi${i + 1}`, p.name); v.set(`dist${i + 1}`, p.distance); });
  return text.replace(/\{([a-z]+[0-9]*)\}/g, (m, k) => {
    if (v.get(k)) return v.get(k);
    if (counts) counts.unresolved = (counts.unresolved || 0) + 1;
    return m;
  });
}

// ---------------------------------------------------------------- checks
const ALL_LANG_NAMES = Object.values(LANGS);
// Problems of a text that should state exactly the facts of sc (used on every record).
function checkStatement(text, sc, { requireAll = true } = {}) {
  const bad = [];
  const facts = factsOf(sc);
  if (requireAll) {
    for (const f of facts) {
      if (f.type === 'poi') {
        if (!text.includes(f.name)) bad.push('missing poi ' + f.name);
        if (!text.includes(f.distance)) bad.push('missing distance ' + f.distance);
      } else if (!(f.type === 'preference' || f.type === 'weather' ? text.toLowerCase().includes(f.value.toLowerCase()) : text.includes(f.value))) bad.push(`missing ${f.type} ${f.value}`);
    }
  }
  const noPlace = text.split(sc.place).join(' ');
  for (const p of privateOf(sc)) if (noPlace.includes(p.value)) bad.push(`private ${p.type} ${p.value}`);
  // every number and clock time must come from the context
  const ctx = contextBlock(sc);
  for (const m of text.match(/\d+(?:[.:]\d+)?/g) || []) if (!ctx.includes(m)) bad.push('number not in context: ' + m);
  // days and languages outside POI and place names
  let bare = text;
  for (const p of sc.pois) bare = bare.split(p.name).join(' ');
  bare = bare.split(sc.place).join(' ');
  for (const d of DAYS) if (d !== sc.day && bare.includes(d)) bad.push('other day ' + d);
  for (const L of ALL_LANG_NAMES) if (L !== LANGS[sc.language] && new RegExp(`\\b${L}\\b`).test(bare)) bad.push('other language ' + L);
  if (/-?\d{1,3}\.\d{4,}/.test(text)) bad.push('coordinate-like number');
  if (/@/.test(text)) bad.push('e-mail-like text');
  return bad;
}

// ---------------------------------------------------------------- splits and tokens
function splitOf(cityId, seed) {
  const h = hash32(seed, 'city', cityId) % 1000;
  return h < 80 ? 'test' : h < 130 ? 'val' : 'train';
}
let encoder = null;
function nTokens(s) {
  if (!encoder) encoder = require('gpt-3-encoder');
  return encoder.encode(s).length;
}
// the Alpaca wrapper netgpt puts around a record (src/tokenizer/chat.c chat_alpaca_prompt)
function alpacaText(instruction, output) {
  return `### Instruction:\n${instruction}\n\n### Response:\n${output}`;
}
function lengthStats(xs) {
  const a = xs.slice().sort((x, y) => x - y);
  const q = (p) => a[Math.min(a.length - 1, Math.floor(p * a.length))];
  return { n: a.length, min: a[0], mean: +(a.reduce((s, x) => s + x, 0) / a.length).toFixed(1), p50: q(0.5), p95: q(0.95), p99: q(0.99), max: a[a.length - 1] };
}
function writeJsonl(file, rows) {
  fs.writeFileSync(file, rows.map((x) => JSON.stringify(x)).join('\n') + (rows.length ? '\n' : ''));
}
function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

module.exports = {
  ROOT, hash32, rng, loadPlaces, countryName, makeScenario, contextBlock, parseContext, templateFill, refsScenario, fillRefs, factsOf, requestOf, privateOf,
  comprehensive, checkStatement, splitOf, nTokens, alpacaText, lengthStats, writeJsonl, arg, fmtDist, hourPart, meal,
  REQUESTS, PREFS, LANGS, CAT_WORDS, DAYS, cap, joinList,
};
