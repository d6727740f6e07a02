-- wrk script for the non-streaming runs: POSTs the body in $WRK_BODY_FILE, rotates API keys from
-- $WRK_KEYS_FILE (one per line; none: no Authorization header) request by request, adds the headers
-- in $WRK_HEADERS, and prints a JSON summary (counts, errors, latency percentiles in microseconds)
-- after a "WRK_JSON" line.

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

local body = read_file(os.getenv("WRK_BODY_FILE"))
local keys = {}
local keys_file = os.getenv("WRK_KEYS_FILE")
if keys_file and keys_file ~= "" then
  for line in io.lines(keys_file) do
    if line ~= "" then
      keys[#keys + 1] = line
    end
  end
end

local requests = {}
local next_request = 0

-- $WRK_HEADERS: more headers, "Name: value" one per line (Portkey's routing headers).
local extra_headers = {}
for line in (os.getenv("WRK_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then
    extra_headers[name] = value
  end
end

function init(args)
  local headers = { ["Content-Type"] = "application/json" }
  for name, value in pairs(extra_headers) do
    headers[name] = value
  end
  if #keys == 0 then
    requests[1] = wrk.format("POST", nil, headers, body)
  else
    for i, key in ipairs(keys) do
      headers["Authorization"] = "Bearer " .. key
      requests[i] = wrk.format("POST", nil, headers, body)
    end
  end
end

function request()
  next_request = next_request % #requests + 1
  return requests[next_request]
end

function done(summary, latency, _)
  local p = {}
  for _, q in ipairs({ 50, 75, 90, 95, 99, 99.9 }) do
    p[#p + 1] = string.format('"%s": %d', tostring(q), latency:percentile(q))
  end
  local e = summary.errors
  io.write("WRK_JSON\n")
  io.write(string.format(
    '{"duration_us": %d, "requests": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "max": %d, "mean": %.1f, "stdev": %.1f, "percentiles": {%s}}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean, latency.stdev, table.concat(p, ", ")
  ))
end
