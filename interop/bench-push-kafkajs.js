#!/usr/bin/env node
// bench-push-kafkajs.js TOPIC GROUP ENDPOINT RECORDS [PARTITIONS_CONSUMED_CONCURRENTLY] [TIMEOUT_MS]
// The push benchmark's baseline (`kafkit-bench push --kafkajs`): the consumer a team writes by
// hand today, as in the seeds. KafkaJS `eachMessage` POSTs each record's value to ENDPOINT with
// `fetch` and awaits the answer; a non-2xx throws, so KafkaJS re-delivers (no backoff, no
// dead-letter topic, no Retry-After). It sends `kafkit-delivery-id: topic/partition/offset` as
// kafkit does, so the endpoint counts distinct records the same way for both. The endpoint
// times the run; this process consumes until SIGTERM (or RECORDS handled, then it stays in the
// group until SIGTERM so that the benchmark stops both clients the same way).
'use strict'
const { kafka, fail, intArg, deadline, disconnectWithin } = require('./lib')

const usage =
  'KAFKA_BROKERS=host:port bench-push-kafkajs.js TOPIC GROUP ENDPOINT RECORDS [PARTITIONS_CONSUMED_CONCURRENTLY] [TIMEOUT_MS]'
const [topic, groupId, endpoint, recordsArg, concurrencyArg = '1', timeoutArg = '900000'] =
  process.argv.slice(2)
if (!topic || !groupId || !endpoint) fail(`missing arguments\nusage: ${usage}`)
const records = intArg(recordsArg, 'RECORDS', usage)
const partitionsConsumedConcurrently = intArg(concurrencyArg, 'PARTITIONS_CONSUMED_CONCURRENTLY', usage)
deadline(intArg(timeoutArg, 'TIMEOUT_MS', usage), 'bench-push-kafkajs')

async function main() {
  const consumer = kafka('kafkit-interop-bench-push').consumer({ groupId })
  const stop = async () => {
    await disconnectWithin(consumer)
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  await consumer.connect()
  await consumer.subscribe({ topic, fromBeginning: true })
  let handled = 0
  await consumer.run({
    partitionsConsumedConcurrently,
    eachMessage: async ({ topic, partition, message }) => {
      const response = await fetch(endpoint, {
        method: 'POST',
        body: message.value,
        headers: {
          'content-type': 'application/json',
          'kafkit-delivery-id': `${topic}/${partition}/${message.offset}`,
        },
      })
      await response.arrayBuffer()
      if (!response.ok) throw new Error(`HTTP ${response.status}`)
      if (++handled === records) process.stderr.write(`handled ${records} records\n`)
    },
  })
}

main().catch(e => fail(e.stack || String(e)))
