-- wrk script: POST /kafka/send with one ~100-byte JSON record, keys spread over 1000 values.
local counter = 0
request = function()
  counter = counter + 1
  local body = string.format(
    '{"topic":"%s","key":"k%d","value":{"id":%d,"body":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}',
    os.getenv("TOPIC") or "bench-http", counter % 1000, counter)
  return wrk.format("POST", "/kafka/send", {["content-type"] = "application/json"}, body)
end
