-- Refresh grants (family B, POST /auth/session) on many concurrent chains: a pool of refresh
-- tokens, one taken per request, the successor of each answer put back. Each chain adopts its
-- successors, so every grant is a rotation (a compare-and-set on the session row).
--
--   wrk ... -s refresh.lua URL -- REFRESH_TOKENS_FILE
--
-- A refused grant loses its chain; once the pool is empty the requests carry a token that
-- cannot exist and are refused (416), which wrk reports as non-2xx answers.
local pool = {}
local first, last = 1, 0

function init(args)
    for line in io.lines(args[1]) do
        if line ~= "" then
            last = last + 1
            pool[last] = line
        end
    end
end

local headers = { ["Content-Type"] = "application/json" }

function request()
    local token = "exhausted"
    if first <= last then
        token = pool[first]
        pool[first] = nil
        first = first + 1
    end
    return wrk.format("POST", "/auth/session", headers, '{"refreshToken":"' .. token .. '"}')
end

function response(status, _, body)
    if status == 200 then
        local successor = body:match('"refreshToken":"([^"]+)"')
        if successor then
            last = last + 1
            pool[last] = successor
        end
    end
end
