#!/usr/bin/env node
// bench-produce.js TOPIC RECORDS SIZE [TIMEOUT_MS]
// KafkaJS producer baseline: RECORDS records with a SIZE-byte JSON value and keys k<i % 1000>,
// sent with producer.send in batches of 1000 with at most 10 sends in flight, acks -1, not
// idempotent, no compression. Timed from the first send to the last acknowledgement
// (connect and metadata excluded). MB/s counts value bytes (MB = 10^6 bytes).
'use strict'
const { kafka, fail, intArg, deadline, disconnectWithin } = require('./lib')

const usage = 'KAFKA_BROKERS=host:port bench-produce.js TOPIC RECORDS SIZE [TIMEOUT_MS]'
const [topic, recordsArg, sizeArg, timeoutArg = '600000'] = process.argv.slice(2)
if (!topic) fail(`missing TOPIC\nusage: ${usage}`)
const records = intArg(recordsArg, 'RECORDS', usage)
const size = intArg(sizeArg, 'SIZE', usage)
const timeoutMs = intArg(timeoutArg, 'TIMEOUT_MS', usage)
const BATCH = 1000
const IN_FLIGHT = 10

// A fixed value that is valid JSON of exactly SIZE bytes, so bench-consume.js can JSON.parse it:
// {"p":"xxx…"} when there is room, else a run of digits (a JSON number).
const value = size >= 8 ? `{"p":"${'x'.repeat(size - 8)}"}` : '1'.repeat(size)

async function main() {
  deadline(timeoutMs, 'bench-produce')
  const producer = kafka('kafkit-interop-bench-produce').producer({ idempotent: false })
  await producer.connect()
  // Warm metadata for the topic so the first timed send does not pay for it.
  await producer.send({ topic, messages: [], acks: -1 }).catch(() => {})

  const started = process.hrtime.bigint()
  const window = new Set()
  for (let start = 0; start < records; start += BATCH) {
    const messages = []
    for (let i = start; i < Math.min(records, start + BATCH); i++) messages.push({ key: `k${i % 1000}`, value })
    const p = producer.send({ topic, messages, acks: -1 }).finally(() => window.delete(p))
    window.add(p)
    // A simple window: once 10 sends are outstanding, wait for any one to finish.
    if (window.size >= IN_FLIGHT) await Promise.race(window)
  }
  await Promise.all(window)
  const seconds = Number(process.hrtime.bigint() - started) / 1e9

  await disconnectWithin(producer)
  process.stdout.write(JSON.stringify({
    client: `kafkajs 2.2.4 send (batches of ${BATCH}, ${IN_FLIGHT} in flight)`,
    idempotent: false,
    acks: -1,
    compression: 'none',
    records,
    seconds: +seconds.toFixed(3),
    records_per_sec: Math.round(records / seconds),
    mb_per_sec: +((records * size) / 1e6 / seconds).toFixed(1),
  }) + '\n')
}

main().then(() => process.exit(0), e => fail(e.stack || String(e)))
