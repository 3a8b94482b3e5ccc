-- HTTP/1.1 pipelining for wrk: every write sends DEPTH requests for the URL's path at once
-- (`wrk ... URL -s bench/wrk/pipeline.lua -- DEPTH`, default 16), and the next write goes
-- out once all DEPTH responses are in. wrk counts each response as a request; it times the
-- batch as one latency sample. The same script as TechEmpower's plaintext benchmark.
init = function(args)
  local depth = tonumber(args[1]) or 16
  local requests = {}
  for i = 1, depth do
    requests[i] = wrk.format()
  end
  batch = table.concat(requests)
end

request = function()
  return batch
end
