// A push-delivery endpoint for kafkit's end-to-end tests: plain node:http, configured by one
// JSON argument, printing one JSON line per request on stdout (after a first line
// {"listening": PORT}), so the Rust test is the oracle and this process only behaves.
//
// Usage: node push-endpoint.js '{"delay_ms":[5,20], "fail_rate":0.1, ...}'
//   delay_ms        [min, max] milliseconds before answering (uniform), default [0, 0]
//   fail_rate       probability of a 500 answer, default 0
//   status_by_key   {"KEY": STATUS}: every request of that record key answers STATUS, with body
//                   {"error":"rejected KEY"}
//   reject_every    N: records whose JSON value has id % N == N - 1 answer 422
//   retry_after     {"KEY": SECONDS}: the first request of each record of that key answers 429
//                   with Retry-After: SECONDS
//   retry_after_times {"KEY": [SECONDS, N]}: the first N requests of each record of that key
//                   answer 429 with Retry-After: SECONDS
//   fail_first      {"KEY": N}: the first N requests of each record of that key answer 500
//   fail_for        {"every": N, "ms": MS}: records whose JSON value has id % N == 0 answer 500
//                   until MS milliseconds after the first request of that id (whichever
//                   `kafkit serve` process sent it: the clock is this endpoint's)
//   secret          a whsec_ secret: each request is verified with the `standardwebhooks`
//                   package (an independent implementation); an unverified one answers 401
//   bearer          a token the Authorization header must carry, else 401
//   unavailable_first N: the first N requests the endpoint gets (whatever their record) answer
//                   503 without Retry-After, as an endpoint that is down for a while
//   overload        K: a request that arrives while K others are being answered gets a 503 at
//                   once (no Retry-After), as a server with K workers that sheds the rest
//   batch_outcomes  {"KEY": "dead_letter" | {"retry_first": N, "retry_after": S}}: for a batch
//                   request (kafkit-batch-size header, a JSON array of records), the records of
//                   KEY are answered dead_letter (reason "poison KEY"), or retry (after S
//                   seconds, if given) on their first N requests; all others done. The answer
//                   is a 200 with {"results": [...]} listing every record
//   tls             {"cert": PEM file, "key": PEM file, "ca": PEM file}: HTTPS with that server
//                   certificate, requiring a client certificate signed by that CA (a client
//                   without one fails the handshake and never reaches the handler); each line
//                   gets "client_cn", the client certificate's common name
//   cloudevents     true: each request is read as a CloudEvent (binary content mode) with the
//                   `cloudevents` package's HTTP.toEvent (an independent implementation); the
//                   line gets "event" (its attributes and data) or "event_error"
//
// Each line: {"at": ms, "done": ms, "closed": the client had closed the connection before the
// answer was written, "id": delivery id, "attempt", "key", "partition", "offset",
// "status", "verified", "overlap": another request of the same key was in flight, "headers",
// "body", "in_flight": requests being answered when it arrived, and with cloudevents "event" or "event_error"}.
// A batch request's line has "batch": its records, each as sent plus its "outcome", and
// "overlap": a record's key was in flight in another request, or twice in this one.
'use strict';

const http = require('node:http');
const https = require('node:https');
const fs = require('node:fs');
const { Webhook } = require('standardwebhooks');
const cloudevents = require('cloudevents');

const config = JSON.parse(process.argv[2] || '{}');
const [minDelay, maxDelay] = config.delay_ms || [0, 0];
const webhook = config.secret ? new Webhook(config.secret) : null;
const inFlightByKey = new Map();
const seen = new Set();
const failures = new Map();
let inFlight = 0;
let requestsSeen = 0;
const firstSeen = new Map();

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function verify(headers, body) {
  if (!webhook) return null;
  try {
    webhook.verify(body, {
      'webhook-id': headers['webhook-id'],
      'webhook-timestamp': headers['webhook-timestamp'],
      'webhook-signature': headers['webhook-signature'],
    });
    return true;
  } catch (_) {
    return false;
  }
}

function decide(key, id, body, verified, headers) {
  if (verified === false) return [401, {}, '{"error":"bad signature"}'];
  if (config.bearer && headers.authorization !== `Bearer ${config.bearer}`) {
    return [401, {}, '{"error":"bad token"}'];
  }
  if (config.status_by_key && key in config.status_by_key) {
    return [config.status_by_key[key], {}, JSON.stringify({ error: `rejected ${key}` })];
  }
  if (config.retry_after && key in config.retry_after && !seen.has(id)) {
    seen.add(id);
    return [429, { 'retry-after': String(config.retry_after[key]) }, ''];
  }
  if (config.retry_after_times && key in config.retry_after_times) {
    const [seconds, times] = config.retry_after_times[key];
    const answered = failures.get(id) || 0;
    if (answered < times) {
      failures.set(id, answered + 1);
      return [429, { 'retry-after': String(seconds) }, ''];
    }
  }
  if (config.fail_first && key in config.fail_first) {
    const failed = failures.get(id) || 0;
    if (failed < config.fail_first[key]) {
      failures.set(id, failed + 1);
      return [500, {}, 'not yet'];
    }
  }
  if (config.fail_for) {
    try {
      const value = JSON.parse(body);
      if (value.id % config.fail_for.every === 0) {
        const now = Date.now();
        if (!firstSeen.has(value.id)) firstSeen.set(value.id, now);
        if (now - firstSeen.get(value.id) < config.fail_for.ms) return [500, {}, 'not yet'];
      }
    } catch (_) { /* not JSON: fall through */ }
  }
  if (config.reject_every) {
    try {
      const value = JSON.parse(body);
      if (value.id % config.reject_every === config.reject_every - 1) {
        return [422, {}, '{"error":"poison"}'];
      }
    } catch (_) { /* not JSON: fall through */ }
  }
  if (config.fail_rate && Math.random() < config.fail_rate) return [500, {}, 'flaky'];
  return [200, {}, '{"ok":true}'];
}

// A record's outcome in a batch request, by its key.
function batchOutcome(item) {
  const spec = (config.batch_outcomes || {})[item.key];
  if (spec === 'dead_letter') return { outcome: 'dead_letter', reason: `poison ${item.key}` };
  if (spec && spec.retry_first) {
    const failed = failures.get(item.id) || 0;
    if (failed < spec.retry_first) {
      failures.set(item.id, failed + 1);
      const answer = { outcome: 'retry' };
      if (spec.retry_after !== undefined) answer.retry_after = spec.retry_after;
      return answer;
    }
  }
  return { outcome: 'done' };
}

async function answerBatch(req, res, body, at) {
  const items = JSON.parse(body);
  const keys = items.map((i) => i.key).filter((k) => k !== null);
  const overlap = keys.some((k) => (inFlightByKey.get(k) || 0) > 0) || new Set(keys).size < keys.length;
  for (const k of keys) inFlightByKey.set(k, (inFlightByKey.get(k) || 0) + 1);
  const verified = verify(req.headers, body);
  let status = 200;
  let answer;
  const results = [];
  if (verified === false) {
    status = 401;
    answer = '{"error":"bad signature"}';
  } else {
    for (const item of items) {
      const result = batchOutcome(item);
      item.outcome = result.outcome;
      results.push({ id: item.id, ...result });
    }
    answer = JSON.stringify({ results });
  }
  if (maxDelay > 0) await sleep(minDelay + Math.random() * (maxDelay - minDelay));
  for (const k of keys) inFlightByKey.set(k, inFlightByKey.get(k) - 1);
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(answer);
  process.stdout.write(JSON.stringify({
    at,
    done: Date.now(),
    id: null,
    status,
    verified,
    overlap,
    method: req.method,
    headers: req.headers,
    batch: items,
  }) + '\n');
}

function clientCommonName(req) {
  if (typeof req.socket.getPeerCertificate !== 'function') return undefined;
  const cert = req.socket.getPeerCertificate();
  return cert && cert.subject ? cert.subject.CN : undefined;
}

const handler = (req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    const at = Date.now();
    const body = Buffer.concat(chunks).toString('utf8');
    if (req.headers['kafkit-batch-size'] !== undefined) return answerBatch(req, res, body, at);
    const key = req.headers['kafka-key'] ?? null;
    const overlap = key !== null && (inFlightByKey.get(key) || 0) > 0;
    if (key !== null) inFlightByKey.set(key, (inFlightByKey.get(key) || 0) + 1);
    const verified = verify(req.headers, body);
    const id = req.headers['kafkit-delivery-id'];
    const arrivedWith = inFlight;
    requestsSeen += 1;
    const down = config.unavailable_first !== undefined && requestsSeen <= config.unavailable_first;
    const shed = config.overload !== undefined && inFlight >= config.overload;
    const [status, extra, answer] = down
      ? [503, {}, 'down']
      : shed
        ? [503, {}, 'overloaded']
        : decide(key, id, body, verified, req.headers);
    if (!shed) inFlight += 1;
    if (!shed && maxDelay > 0) await sleep(minDelay + Math.random() * (maxDelay - minDelay));
    if (!shed) inFlight -= 1;
    if (key !== null) inFlightByKey.set(key, inFlightByKey.get(key) - 1);
    let event;
    let eventError;
    if (config.cloudevents) {
      try {
        event = cloudevents.HTTP.toEvent({ headers: req.headers, body }).toJSON();
      } catch (e) {
        eventError = String(e && e.message ? e.message : e);
      }
    }
    // The client closed the connection before the answer (it gave up on the request).
    const closed = req.socket.destroyed;
    res.writeHead(status, { 'content-type': 'application/json', ...extra });
    res.end(answer);
    process.stdout.write(JSON.stringify({
      at,
      done: Date.now(),
      closed,
      id,
      attempt: Number(req.headers['kafkit-attempt']),
      key,
      partition: Number(req.headers['kafka-partition']),
      offset: Number(req.headers['kafka-offset']),
      status,
      in_flight: arrivedWith,
      verified,
      overlap,
      method: req.method,
      headers: req.headers,
      body,
      event,
      event_error: eventError,
      client_cn: clientCommonName(req),
    }) + '\n');
  });
};

const server = config.tls
  ? https.createServer({
    cert: fs.readFileSync(config.tls.cert),
    key: fs.readFileSync(config.tls.key),
    ca: fs.readFileSync(config.tls.ca),
    requestCert: true,
    rejectUnauthorized: true,
  }, handler)
  : http.createServer(handler);

server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  const scheme = config.tls ? 'https' : 'http';
  process.stdout.write(JSON.stringify({ listening: server.address().port, scheme }) + '\n');
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
