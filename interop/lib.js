// Shared plumbing for the KafkaJS interop scripts: broker list from the environment, a client
// whose logs never reach stdout (stdout carries only results), a hard deadline so a script can
// never hang a test, and bounded disconnects.
'use strict'

// KafkaJS 2.x warns on every run that its default partitioner changed; that is expected here.
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'

const { Kafka, logLevel } = require('kafkajs')

function fail(message) {
  process.stderr.write(`${process.argv[1].split('/').pop()}: ${message}\n`)
  process.exit(1)
}

function brokers() {
  const list = (process.env.KAFKA_BROKERS || '').split(',').map(s => s.trim()).filter(Boolean)
  if (list.length === 0) fail('set KAFKA_BROKERS (comma-separated host:port list)')
  return list
}

// The default logCreator prints INFO to stdout; ours sends ERROR-level lines to stderr only.
const stderrLogger = () => ({ namespace, level, log }) => {
  if (level <= logLevel.ERROR) process.stderr.write(`kafkajs ${namespace}: ${log.message}${log.error ? ` (${log.error})` : ""}\n`)
}

function kafka(clientId) {
  return new Kafka({ clientId, brokers: brokers(), logLevel: logLevel.ERROR, logCreator: stderrLogger })
}

// Parses a positive integer argument or exits with a usage message.
function intArg(value, name, usage) {
  const n = Number(value)
  if (!Number.isInteger(n) || n <= 0) fail(`${name} must be a positive integer\nusage: ${usage}`)
  return n
}

// Kills the process after `ms` whatever is pending (a stuck connect, rebalance or disconnect).
function deadline(ms, what) {
  setTimeout(() => fail(`${what}: timed out after ${ms} ms`), ms).unref()
}

// Disconnect, but never wait more than `ms` for it: exiting matters more than a clean goodbye.
function disconnectWithin(client, ms = 5000) {
  return Promise.race([
    client.disconnect().catch(() => {}),
    new Promise(resolve => setTimeout(resolve, ms).unref()),
  ])
}

module.exports = { kafka, fail, intArg, deadline, disconnectWithin }
