// The edge web UI in headless Chromium over the DevTools protocol (no npm packages: Node's
// WebSocket, `node --experimental-websocket` on Node 20): opens URL, waits until the page has
// finished its chat round trip (body[data-done]), prints the panels' texts as JSON on stdout and
// saves a screenshot.   usage: node --experimental-websocket edge_ui.js CHROMIUM URL PNG
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const [chrome, url, png] = process.argv.slice(2);
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'netgpt-ui-'));
const proc = spawn(chrome, ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--no-first-run', '--disable-dev-shm-usage', '--window-size=1280,900',
  '--remote-debugging-port=0', `--user-data-dir=${profile}`, 'about:blank'], { stdio: ['ignore', 'ignore', 'pipe'] });

function finish(code, msg) {
  if (msg) process.stderr.write(msg + '\n');
  const done = () => {
    try { fs.rmSync(profile, { recursive: true, force: true }); } catch (e) { /* a temp dir left behind */ }
    process.exit(code);
  };
  if (proc.exitCode !== null || proc.signalCode !== null) return done();
  proc.on('exit', done);
  proc.kill('SIGKILL');
}
setTimeout(() => finish(1, 'edge_ui: timed out after 60 s'), 60000);

let log = '';
proc.stderr.on('data', (d) => {
  log += d;
  const m = /DevTools listening on (ws:\/\/\S+)/.exec(log);
  if (m && !proc.started) { proc.started = true; run(m[1]).catch((e) => finish(1, 'edge_ui: ' + e.stack)); }
});
proc.on('exit', (c) => { if (!proc.started) { process.stderr.write('edge_ui: chromium exited (' + c + '):\n' + log); process.exit(1); } });

async function run(wsUrl) {
  const ws = new WebSocket(wsUrl);
  await new Promise((ok, bad) => { ws.onopen = ok; ws.onerror = bad; });
  let next = 1;
  const waiting = new Map();
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.id && waiting.has(m.id)) {
      const { ok, bad } = waiting.get(m.id);
      waiting.delete(m.id);
      m.error ? bad(new Error(JSON.stringify(m.error))) : ok(m.result);
    }
  };
  const send = (method, params = {}, sessionId) => new Promise((ok, bad) => {
    const id = next++;
    waiting.set(id, { ok, bad });
    ws.send(JSON.stringify({ id, method, params, sessionId }));
  });
  const { targetId } = await send('Target.createTarget', { url });
  const { sessionId } = await send('Target.attachToTarget', { targetId, flatten: true });
  const evaluate = async (expr) => (await send('Runtime.evaluate', { expression: expr, returnByValue: true }, sessionId)).result.value;
  for (let i = 0; i < 500; i++) {
    if (await evaluate('document.body && document.body.dataset.done === "1"')) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const ids = ['concise', 'comprehensive', 'answer', 't-mode', 't-place', 't-context', 't-edge', 't-ttft', 't-first',
    't-total', 't-bytes', 't-tokens', 't-privacy', 'status'];
  const texts = await evaluate(`(${JSON.stringify(ids)}).reduce((o, id) => (o[id] = document.getElementById(id).textContent, o),
    {done: document.body.dataset.done === "1", bubbles: document.querySelectorAll("#chat .msg").length})`);
  const shot = await send('Page.captureScreenshot', { format: 'png' }, sessionId);
  fs.writeFileSync(png, Buffer.from(shot.data, 'base64'));
  process.stdout.write(JSON.stringify(texts, null, 1) + '\n');
  ws.close();
  finish(0);
}
