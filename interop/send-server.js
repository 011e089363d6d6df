// The hand-written service kafkit's gateway replaces (seed 003's NestJS module, without Nest):
// node:http + a KafkaJS 2.2.4 idempotent producer, POST /kafka/send {topic, key?, value} ->
// {topic, partition, offset} once the broker acknowledged. For scripts/bench-gateway.
// Usage: KAFKA_BROKERS=host:port PORT=8081 node send-server.js (prints "ready" when listening)
'use strict'
const http = require('node:http')
const { kafka } = require('./lib')

const producer = kafka('send-server').producer({ idempotent: true, maxInFlightRequests: 5 })

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/kafka/send') { res.writeHead(404).end(); return }
  const chunks = []
  req.on('data', chunk => chunks.push(chunk))
  req.on('end', async () => {
    try {
      const { topic, key, value } = JSON.parse(Buffer.concat(chunks))
      const [meta] = await producer.send({ topic, acks: -1, messages: [{ key, value: JSON.stringify(value) }] })
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ topic, partition: meta.partition, offset: Number(meta.baseOffset) }))
    } catch (error) {
      res.writeHead(503, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ error: { code: 'send_failed', message: String(error) } }))
    }
  })
})

producer.connect().then(() => server.listen(Number(process.env.PORT || 8081), '127.0.0.1', () => console.log('ready')))
process.on('SIGTERM', async () => { server.close(); await producer.disconnect(); process.exit(0) })
