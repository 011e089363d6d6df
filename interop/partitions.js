#!/usr/bin/env node
// partitions.js PARTITIONS [KEY...]
// Prints `KEY<TAB>PARTITION` for each key (arguments, or stdin one per line when none are given)
// as KafkaJS's DefaultPartitioner chooses it for a topic with PARTITIONS partitions. No broker.
'use strict'
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'
const { Partitioners } = require('kafkajs')

const [partitionsArg, ...keys] = process.argv.slice(2)
const partitions = Number(partitionsArg)
if (!Number.isInteger(partitions) || partitions <= 0) {
  process.stderr.write('partitions.js: PARTITIONS must be a positive integer\nusage: partitions.js PARTITIONS [KEY...]  (keys from stdin if none)\n')
  process.exit(1)
}

// Every partition has a leader, so only the key hash decides (keyed records never round-robin).
const partitionMetadata = Array.from({ length: partitions }, (_, partitionId) => ({ partitionId, leader: 0 }))
const partitioner = Partitioners.DefaultPartitioner()
const line = key => `${key}\t${partitioner({ topic: 't', partitionMetadata, message: { key, value: null } })}`

if (keys.length > 0) {
  process.stdout.write(keys.map(line).join('\n') + '\n')
} else {
  let input = ''
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', chunk => (input += chunk))
  process.stdin.on('end', () => {
    const lines = input.split('\n').map(l => l.replace(/\r$/, ''))
    if (lines[lines.length - 1] === '') lines.pop() // trailing newline, not an empty key
    if (lines.length > 0) process.stdout.write(lines.map(line).join('\n') + '\n')
  })
}
