#!/usr/bin/env node
// bench-consume.js TOPIC RECORDS [MAX_BYTES_PER_PARTITION] [TIMEOUT_MS]
// KafkaJS consumer baseline: a fresh group reads TOPIC from the beginning with eachMessage and a
// no-op handler that JSON.parse's each value (the work a typed handler does), until RECORDS
// records. Timed from consumer.run to the last record, so the group join is included.
// MB/s counts value bytes (MB = 10^6 bytes); peak RSS is sampled every 100 ms.
'use strict'
const { kafka, fail, intArg, disconnectWithin } = require('./lib')

const usage = 'KAFKA_BROKERS=host:port bench-consume.js TOPIC RECORDS [MAX_BYTES_PER_PARTITION] [TIMEOUT_MS]'
const [topic, recordsArg, maxBytesArg, timeoutArg = '600000'] = process.argv.slice(2)
if (!topic) fail(`missing TOPIC\nusage: ${usage}`)
const records = intArg(recordsArg, 'RECORDS', usage)
const maxBytesPerPartition = maxBytesArg ? intArg(maxBytesArg, 'MAX_BYTES_PER_PARTITION', usage) : undefined
const timeoutMs = intArg(timeoutArg, 'TIMEOUT_MS', usage)

async function main() {
  let seen = 0
  setTimeout(() => fail(`timed out after ${timeoutMs} ms having seen ${seen} of ${records} records`), timeoutMs).unref()

  let peakRss = process.memoryUsage().rss
  setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 100).unref()

  const options = { groupId: `kafkajs-interop-${Math.random().toString(36).slice(2)}` }
  if (maxBytesPerPartition) {
    // KafkaJS's fetch-wide maxBytes (default 10 MiB) would otherwise cap a larger per-partition
    // limit; give it room for every partition of a typical 6-partition topic.
    options.maxBytesPerPartition = maxBytesPerPartition
    options.maxBytes = Math.max(maxBytesPerPartition * 6, 10485760)
  }
  const consumer = kafka('kafkit-interop-bench-consume').consumer(options)
  await consumer.connect()
  await consumer.subscribe({ topic, fromBeginning: true })

  let bytes = 0
  let jsonErrors = 0
  let done
  const finished = new Promise(resolve => (done = resolve))
  const started = process.hrtime.bigint()
  await consumer.run({
    eachMessage: async ({ message }) => {
      if (seen >= records) return
      try { JSON.parse(message.value) } catch { jsonErrors++ }
      bytes += message.value ? message.value.length : 0
      if (++seen === records) done(process.hrtime.bigint())
    },
  })
  const seconds = Number((await finished) - started) / 1e9
  peakRss = Math.max(peakRss, process.memoryUsage().rss)
  await disconnectWithin(consumer)

  const result = {
    client: `kafkajs 2.2.4 eachMessage (maxBytesPerPartition=${maxBytesPerPartition || 'default 1048576'})`,
    records,
    seconds: +seconds.toFixed(3),
    records_per_sec: Math.round(records / seconds),
    mb_per_sec: +(bytes / 1e6 / seconds).toFixed(1),
    peak_rss_mib: Math.round(peakRss / 1048576),
  }
  if (jsonErrors) result.json_errors = jsonErrors // values that were not JSON (still counted)
  process.stdout.write(JSON.stringify(result) + '\n')
}

main().then(() => process.exit(0), e => fail(e.stack || String(e)))
