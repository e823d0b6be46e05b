-- wrk script for bench/login-flood.sh: HTTP Basic logins, counted by status.
-- LOGIN_AUTH (environment): the value of the Authorization header.
local auth = os.getenv("LOGIN_AUTH")
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   counts = {}
end

function request()
   return wrk.format("GET", "/session/login", { ["Authorization"] = auth })
end

function response(status, headers, body)
   counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
   local total = {}
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("counts")) do
         total[status] = (total[status] or 0) + n
      end
   end
   local seconds = summary.duration / 1e6
   local line = "statuses:"
   for status, n in pairs(total) do
      line = line .. string.format(" %d=%d", status, n)
   end
   io.write(line .. "\n")
   local judged = (total[200] or 0) + (total[401] or 0) + (total[403] or 0) + (total[207] or 0)
   io.write(string.format("judged logins/s: %.1f\n", judged / seconds))
   io.write(string.format("p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
      latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
