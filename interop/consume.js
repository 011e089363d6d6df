#!/usr/bin/env node
// consume.js TOPIC COUNT TIMEOUT_MS
// Reads TOPIC from the beginning in a fresh consumer group and prints one line per record,
// {"partition":n,"offset":"o","key":"<utf8>"|null,"value":"<utf8>","headers":{name:"<utf8>"}},
// until COUNT records were seen (exit 0) or TIMEOUT_MS passes (exit 1, count on stderr).
'use strict'
const { kafka, fail, intArg, disconnectWithin } = require('./lib')

const usage = 'KAFKA_BROKERS=host:port consume.js TOPIC COUNT TIMEOUT_MS'
const [topic, countArg, timeoutArg] = process.argv.slice(2)
if (!topic) fail(`missing TOPIC\nusage: ${usage}`)
const count = intArg(countArg, 'COUNT', usage)
const timeoutMs = intArg(timeoutArg, 'TIMEOUT_MS', usage)

const utf8 = b => (b == null ? null : b.toString('utf8'))

async function main() {
  let seen = 0
  // A hard stop: covers a slow join, a broker that never answers, and a hanging disconnect.
  setTimeout(() => fail(`timed out after ${timeoutMs} ms having seen ${seen} of ${count} records`), timeoutMs).unref()

  const groupId = `kafkajs-interop-${Math.random().toString(36).slice(2)}`
  const consumer = kafka('kafkit-interop-consume').consumer({ groupId })
  await consumer.connect()
  await consumer.subscribe({ topic, fromBeginning: true })

  let done
  const finished = new Promise(resolve => (done = resolve))
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      if (seen >= count) return // extra records after the target are not printed
      const headers = {}
      for (const [name, v] of Object.entries(message.headers || {})) {
        // A repeated header name arrives as an array; keep all values in that case.
        headers[name] = Array.isArray(v) ? v.map(utf8) : utf8(v)
      }
      process.stdout.write(JSON.stringify({
        partition, offset: message.offset, key: utf8(message.key), value: utf8(message.value), headers,
      }) + '\n')
      if (++seen === count) done()
    },
  })
  // Disconnect outside eachMessage: disconnecting from inside the handler waits on itself.
  await finished
  await disconnectWithin(consumer)
}

main().then(() => process.exit(0), e => fail(e.stack || String(e)))
