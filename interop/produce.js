#!/usr/bin/env node
// produce.js TOPIC COUNT [TIMEOUT_MS]
// Produces COUNT records (key `key-<i>`, value {"id":i,"from":"kafkajs"}, headers source/seq)
// with KafkaJS's DefaultPartitioner (Java-compatible murmur2), acks -1, and prints one line per
// record: {"key":"key-<i>","partition":p,"offset":"o"}.
'use strict'
const { Partitioners } = require('kafkajs')
const { kafka, fail, intArg, deadline, disconnectWithin } = require('./lib')

const usage = 'KAFKA_BROKERS=host:port produce.js TOPIC COUNT [TIMEOUT_MS]'
const [topic, countArg, timeoutArg = '30000'] = process.argv.slice(2)
if (!topic) fail(`missing TOPIC\nusage: ${usage}`)
const count = intArg(countArg, 'COUNT', usage)
const timeoutMs = intArg(timeoutArg, 'TIMEOUT_MS', usage)
const CHUNK = 10000 // records per send call: "one or a few" sends, bounded request size

// Wrap the default partitioner to record the partition it chose for each message, so the printed
// partition is the one KafkaJS actually produced to (not a recomputation).
const chosen = new Map()
const recordingPartitioner = () => {
  const inner = Partitioners.DefaultPartitioner()
  return args => {
    const partition = inner(args)
    chosen.set(args.message, partition)
    return partition
  }
}

async function main() {
  deadline(timeoutMs, 'produce')
  const producer = kafka('kafkit-interop-produce').producer({
    createPartitioner: recordingPartitioner,
    allowAutoTopicCreation: true,
  })
  await producer.connect()
  try {
    for (let start = 0; start < count; start += CHUNK) {
      const messages = []
      for (let i = start; i < Math.min(count, start + CHUNK); i++) {
        messages.push({
          key: `key-${i}`,
          value: JSON.stringify({ id: i, from: 'kafkajs' }),
          headers: { source: 'kafkajs', seq: String(i) },
        })
      }
      const results = await producer.send({ topic, messages, acks: -1 })
      // One send call puts each partition's messages, in order, into one batch whose first
      // offset is baseOffset; a record's offset is baseOffset + its index within that partition.
      const base = new Map(results.map(r => [r.partition, BigInt(r.baseOffset)]))
      const next = new Map()
      const lines = []
      for (const m of messages) {
        const p = chosen.get(m)
        if (!base.has(p)) fail(`no produce result for partition ${p}`)
        const idx = next.get(p) || 0n
        next.set(p, idx + 1n)
        lines.push(JSON.stringify({ key: m.key, partition: p, offset: String(base.get(p) + idx) }))
      }
      process.stdout.write(lines.join('\n') + '\n')
      chosen.clear()
    }
  } finally {
    await disconnectWithin(producer)
  }
}

main().then(() => process.exit(0), e => fail(e.stack || String(e)))
