// What a service writes instead of a KafkaJS consumer once `kafkit serve --subscriptions` pushes
// its records: one HTTP handler. No `consumeFromTopic(topic, group, handler)`, no retry loop, no
// dead-letter producer, no offset bookkeeping: kafkit does those, and this handler only says
// what happened with its status code.
//
//   push.toml:
//     [[subscription]]
//     name = "billing"
//     topics = ["orders"]
//     endpoint = "http://127.0.0.1:3000/orders"
//     auth = { webhook_secrets = ["${BILLING_SECRET}"] }
//
//   BILLING_SECRET=whsec_... node interop/push-example.js        # this endpoint
//   BILLING_SECRET=whsec_... kafkit serve --subscriptions push.toml
//
// Answer 2xx when done, 4xx when the record can never succeed (it goes to orders.dlq with the
// status and the body), 5xx to have it retried with backoff, 429/503 with Retry-After to slow
// kafkit down for that key.
'use strict';

const http = require('node:http');
const { Webhook } = require('standardwebhooks');

const webhook = new Webhook(process.env.BILLING_SECRET);
const port = Number(process.env.PORT || 3000);
const seen = new Set(); // use your database: a unique index on the delivery id

async function charge(order) {
  // Your business logic. Throwing makes kafkit retry (a 500).
  console.log(`charging order ${order.id} for ${order.amount}`);
}

http
  .createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', async () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const reply = (status, payload) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(payload));
      };
      try {
        webhook.verify(body, req.headers); // webhook-id / -timestamp / -signature
      } catch (_) {
        return reply(401, { error: 'bad signature' });
      }
      // The same on every attempt and after a restart: at-least-once made idempotent.
      const deliveryId = req.headers['kafkit-delivery-id'];
      if (seen.has(deliveryId)) return reply(200, { duplicate: true });
      let order;
      try {
        order = JSON.parse(body);
      } catch (_) {
        return reply(422, { error: 'not JSON' }); // dead-lettered at once
      }
      if (!Number.isFinite(order.amount)) return reply(422, { error: 'no amount' });
      try {
        await charge(order, { key: req.headers['kafka-key'], attempt: req.headers['kafkit-attempt'] });
      } catch (error) {
        return reply(500, { error: String(error) }); // retried with backoff
      }
      seen.add(deliveryId);
      reply(200, { ok: true });
    });
  })
  .listen(port, '127.0.0.1', () => console.log(`billing endpoint on http://127.0.0.1:${port}/orders`));
