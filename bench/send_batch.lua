-- wrk script: POST /kafka/send-batch with 100 records of ~100 bytes each.
local topic = os.getenv("TOPIC") or "bench-http"
local records = {}
for i = 1, 100 do
  records[i] = string.format(
    '{"topic":"%s","key":"k%d","value":{"id":%d,"body":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}',
    topic, i, i)
end
local body = '{"messages":[' .. table.concat(records, ",") .. ']}'
request = function()
  return wrk.format("POST", "/kafka/send-batch", {["content-type"] = "application/json"}, body)
end
done = function(summary, latency, requests)
  io.write(string.format("records/s: %.0f\n", summary.requests / (summary.duration / 1e6) * 100))
end
